"""Redis plumbing: the one boundary where redis-py errors become ``StateStoreError``, the Lua
script loader, the state marker and the replica heartbeat (batching lives in redis/pipeline.py)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import ParamSpec, TypeVar

import structlog
from redis.exceptions import RedisError, ResponseError

from broker.errors import StateLost, StateStoreError
from broker.redis import keys
from broker.redis.client import RedisClient

P = ParamSpec("P")
T = TypeVar("T")


log = structlog.get_logger("broker.redis")

def state_error(exc: RedisError | OSError) -> StateStoreError:
    """The broker's error for a redis-py or socket error: ``StateLost`` when Redis answered that a
    consumer group the broker had created is gone (a flush, a failover to a stale replica)."""
    if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
        return StateLost(f"redis: {exc}")
    return StateStoreError(f"redis: {type(exc).__name__}: {exc}")


async def guarded(call: Awaitable[T]) -> T:
    """Await one Redis call; its Redis and socket errors become StateStoreError."""
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise state_error(exc) from exc


async def create_group(redis: RedisClient, stream: str, group: str) -> bool:
    """A consumer group from the stream's start (nothing queued is skipped), the stream made if
    missing; True if it had to be created, False if it was there."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise state_error(exc) from exc
        return False
    except (RedisError, OSError) as exc:
        raise state_error(exc) from exc
    return True


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate a coroutine that talks to Redis: its Redis and socket errors become StateStoreError."""
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise state_error(exc) from exc
    return wrapper


class StateMarker:
    """Notices that Redis lost the broker's state (a flush, a failover to a replica that missed
    writes): one key, written once by whichever replica comes first, and compared by every
    replica on each heartbeat. Gone, or replaced by another replica's, means lost."""

    KEY = keys.STATE

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._seen: bytes | str | None = None

    async def lost(self) -> bool:
        """True once per loss; raises redis-py errors while Redis is away."""
        current = await self._redis.get(self.KEY)
        if current is None:
            token = uuid.uuid4().hex.encode()
            await self._redis.set(self.KEY, token, nx=True)
            current = await self._redis.get(self.KEY)
        was, self._seen = self._seen, current
        return was is not None and current != was


class Heartbeat:
    """A per-replica key operators can read: ``{broker}:replica:<id>`` (JSON, expiring after three
    intervals); and, on each beat, the state marker compared, to notice a Redis that lost the
    broker's keys."""

    def __init__(self, redis: RedisClient, *, replica: str, version: str, started: float, interval: float,
                 mappings: Callable[[], Sequence[str]], on_lost: Callable[[], None]) -> None:
        self._redis = redis
        self._key = keys.replica(replica)
        self._fields = {"replica": replica, "version": version, "started": started}
        self._ttl_ms = int(interval * 3000)
        self._mappings = mappings
        self._on_lost = on_lost
        self._marker = StateMarker(redis)

    async def beat(self) -> None:
        value = json.dumps({**self._fields, "mappings": sorted(self._mappings())})
        try:
            await self._redis.set(self._key, value, px=self._ttl_ms)
            if await self._marker.lost():
                self._on_lost()
                log.error("redis_state_lost", what="redis",
                          note="Redis answered without the broker's keys (a flush, or a failover to a "
                               "replica that missed writes); consumer groups, scripts and heartbeats are "
                               "recreated, stream mappings resume from the checkpoints this replica knew")
        except (RedisError, OSError) as exc:
            log.warning("heartbeat_failed", error=str(exc))


def lua(package: str, name: str) -> str:
    """A Lua script shipped in ``<package>/scripts/`` (each starts with its KEYS/ARGV contract)."""
    return resources.files(package).joinpath("scripts", name).read_text(encoding="utf-8")
