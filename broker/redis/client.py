"""The redis-py client for ``redis_url``: one server, a Redis Cluster, or a Sentinel-managed primary.

    redis://[user:password@]host:port/DB          one server (rediss:// for TLS)
    redis+cluster://[user:password@]host:port[,host:port...]       redis-py's RedisCluster
    redis+sentinel://[user:password@]host:port[,host:port...]/MASTER_NAME[/DB]   redis-py's Sentinel

(``rediss+cluster://`` and ``rediss+sentinel://`` use TLS.) The broker's keys carry hash tags, so
every Lua script's keys share one Cluster slot. Every client gets socket timeouts: a Redis that
stops answering (a frozen node, a partition) must fail calls, not hang them, so that readiness
reports it and callers back off and retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from broker.errors import ConfigError, ConfigIssue
from broker.redaction import redact_url

SOCKET_TIMEOUT_SECONDS = 10.0  # above the longest blocking read (XREADGROUP BLOCK 1 s)
CONNECT_TIMEOUT_SECONDS = 5.0
RedisClient = aioredis.Redis | RedisCluster  # what ``connected`` yields
MAX_CONNECTIONS = 64  # a thousand shard consumers wait for one of these instead of opening their own
_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``redis_url``."""

    kind: str  # "single", "cluster" or "sentinel"
    url: str
    hosts: list[tuple[str, int]] = field(default_factory=list)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    master: str = ""
    db: int = 0


def parse(url: str) -> RedisTarget:
    """Parse ``redis_url``; ConfigError naming the setting when it is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise _bad(f"unsupported scheme in {redact_url(url)!r}; use one of " + ", ".join(f"{s}://" for s in _SCHEMES))
    tls = scheme.startswith("rediss")
    if "+" not in scheme:
        return RedisTarget("single", url, tls=tls)
    kind = scheme.split("+", 1)[1]
    userinfo, _, location = rest.rpartition("@")
    hostlist, _, path = location.partition("/")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    hosts = [_host_port(h, url) for h in hostlist.split(",") if h]
    if not hosts:
        raise _bad(f"{redact_url(url)!r} names no host:port")
    parts = [p for p in path.split("/") if p]
    master, db = "", 0
    if kind == "sentinel":
        if not parts:
            raise _bad(f"{redact_url(url)!r} needs the master name: redis+sentinel://host:port/MASTER_NAME[/DB]")
        master = unquote(parts[0])
        db = _db(parts[1], url) if len(parts) > 1 else 0
    elif parts:
        raise _bad(f"{redact_url(url)!r}: a Redis Cluster has no databases; drop the path")
    return RedisTarget(kind, url, hosts, unquote(username) or None, unquote(password) or None, tls, master, db)


def text(reply: bytes | str) -> str:
    """A reply as text: the client answers bytes (redis-py's types also allow str)."""
    return reply.decode() if isinstance(reply, bytes) else reply


def raw(reply: bytes | str) -> bytes:
    """A reply as bytes, as the client answers it."""
    return reply.encode() if isinstance(reply, str) else reply


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[Any]:
    """The asyncio client for ``url``, closed (with a Sentinel's own connections) on exit."""
    target = parse(url)
    timeouts: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_SECONDS,
                                "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS}
    others: list[Any] = []
    if target.kind == "single":
        client: Any = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT_SECONDS, **timeouts))
    elif target.kind == "cluster":
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.hosts], ssl=target.tls,
                              max_connections=MAX_CONNECTIONS, username=target.username,
                              password=target.password, **timeouts)
    else:
        auth: dict[str, Any] = {"username": target.username, "password": target.password, "ssl": target.tls}
        sentinel = Sentinel(target.hosts, sentinel_kwargs={**auth, **timeouts},  # type: ignore[no-untyped-call,unused-ignore]
                            **auth, **timeouts)
        client = sentinel.master_for(target.master, db=target.db)
        others = list(sentinel.sentinels)
    try:
        yield client
    finally:
        await client.aclose()
        for other in others:
            await other.aclose()


def _host_port(item: str, url: str) -> tuple[str, int]:
    parsed = urlsplit(f"//{item}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise _bad(f"{redact_url(url)!r}: {item!r} is not host:port")
    return parsed.hostname, port


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise _bad(f"{redact_url(url)!r}: database {text!r} is not a number")
    return int(text)


def _bad(message: str) -> ConfigError:
    return ConfigError([ConfigIssue("broker.redis_url", message)])
