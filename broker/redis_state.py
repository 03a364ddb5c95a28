"""Redis plumbing: the one boundary where redis-py errors become ``StateStoreError``, the Lua
script loader, and the auto-pipeline that batches commands from concurrent tasks."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import structlog
from redis.exceptions import NoScriptError, RedisError, ResponseError

from broker.errors import StateLost, StateStoreError

P = ParamSpec("P")
T = TypeVar("T")


log = structlog.get_logger("broker.redis")

def state_error(exc: RedisError | OSError) -> StateStoreError:
    """The broker's error for a redis-py or socket error: ``StateLost`` when Redis answered that a
    consumer group the broker had created is gone (a flush, a failover to a stale replica)."""
    if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
        return StateLost(f"redis: {exc}")
    return StateStoreError(f"redis: {type(exc).__name__}: {exc}")


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

    KEY = "{broker}:state"

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._seen: bytes | None = None

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

    def __init__(self, redis: Any, *, replica: str, version: str, started: float, interval: float,
                 mappings: Callable[[], Sequence[str]], on_lost: Callable[[], None]) -> None:
        self._redis = redis
        self._key = f"{{broker}}:replica:{replica}"
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


class AutoPipeline:
    """Commands from concurrent tasks sent to Redis together (ioredis's auto-pipelining).

    Each caller awaits its own reply, but everything queued while earlier round trips are under
    way goes out in one pipeline: one connection checkout, one write and one read per batch
    instead of per command. Nothing waits on a timer: a lone command is sent on the next loop
    iteration, so under light load this is a plain round trip. Commands are not a transaction;
    each keeps its own reply or error. Scripts are loaded once; a ``NOSCRIPT`` reply (Redis was
    restarted or flushed) reloads the script and runs that call again on its own.
    """

    def __init__(self, redis: Any, *, max_batch: int = 256, max_in_flight: int = 2) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queued: list[_Queued] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        """One Redis command, e.g. ``execute("XADD", key, "*", "e", doc)``; its parsed reply."""
        return await self._submit(args, None)

    async def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered script (``redis.register_script``) in the next pipeline."""
        return await self._submit(("EVALSHA", script.sha, len(keys), *keys, *args),
                                  lambda: script(keys=list(keys), args=list(args)))

    def _submit(self, command: tuple[Any, ...], again: Callable[[], Awaitable[Any]] | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append(_Queued(command, again, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        self._scheduled = False
        if not self._queued or self._in_flight >= self._max_in_flight:
            return
        batch, self._queued = self._queued[:self._max_batch], self._queued[self._max_batch:]
        self._in_flight += 1
        task = asyncio.ensure_future(self._round_trip(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _round_trip(self, batch: list[_Queued]) -> None:
        batch = [item for item in batch if not item.future.done()]  # a caller cancelled before the send: drop it
        try:
            if not batch:
                return
            pipe = self._redis.pipeline(transaction=False)
            for item in batch:
                pipe.execute_command(*item.command)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except BaseException as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc if isinstance(exc, Exception) else RedisError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise
                return
            self._settle(batch, replies)
        finally:
            self._in_flight -= 1
            if self._queued and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._send)

    def _settle(self, batch: list[_Queued], replies: list[Any]) -> None:
        """Each caller gets its own reply or error; a script Redis no longer knows runs again alone."""
        for item, reply in zip(batch, replies, strict=True):
            if item.future.done():  # the caller gave up waiting
                continue
            if isinstance(reply, NoScriptError) and item.again is not None:
                self._retry_alone(item)
            elif isinstance(reply, Exception):
                item.future.set_exception(reply)
            else:
                item.future.set_result(reply)

    def _retry_alone(self, item: _Queued) -> None:
        assert item.again is not None
        task = asyncio.ensure_future(item.again())
        self._tasks.add(task)

        def settle(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            if item.future.done():
                return
            if done.cancelled():
                item.future.cancel()
            elif (exc := done.exception()) is not None:
                item.future.set_exception(exc)
            else:
                item.future.set_result(done.result())
        task.add_done_callback(settle)

    async def aclose(self) -> None:
        """Wait for the commands queued or under way (their callers are owed replies)."""
        while self._tasks or self._queued:  # queued commands always have a send scheduled or a trip to follow
            await (asyncio.gather(*self._tasks, return_exceptions=True) if self._tasks else asyncio.sleep(0))


class ScriptBatch:
    """Calls of one script from concurrent tasks of this replica, on the same keys, sent as one call
    through the AutoPipeline: ARGV is the calls' arguments one after another, and the script
    answers with one reply per call, in order. redis-py spends ~25 µs of CPU on each command of a
    pipeline (packing, parsing, bookkeeping), several times what the same work costs as more
    arguments of one command; an async event's permit, release and acknowledgement were three.
    Calls made in one pass of the event loop go together; a caller that was cancelled before the
    send is left out."""

    def __init__(self, pipeline: AutoPipeline, script: Any) -> None:
        self._pipeline = pipeline
        self._script = script
        self._pending: dict[tuple[Any, ...], list[tuple[Sequence[Any], asyncio.Future[Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        key = tuple(keys)
        calls = self._pending.get(key)
        if calls is None:
            calls = self._pending[key] = []
            loop.call_soon(self._flush, key)
        calls.append((args, future))
        return future

    def _flush(self, key: tuple[Any, ...]) -> None:
        calls = [c for c in self._pending.pop(key, []) if not c[1].done()]
        if calls:
            task = asyncio.ensure_future(self._send(key, calls))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, key: tuple[Any, ...], calls: list[tuple[Sequence[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._pipeline.script(self._script, key, [a for args, _ in calls for a in args])
        except Exception as exc:  # every caller gets the error (redis-py's or a socket's)
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(calls, replies, strict=True):
            if not future.done():
                future.set_result(reply)


@dataclass(slots=True)
class _Queued:
    command: tuple[Any, ...]
    again: Callable[[], Awaitable[Any]] | None
    future: asyncio.Future[Any]
