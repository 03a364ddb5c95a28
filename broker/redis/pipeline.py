"""Redis commands of concurrent tasks sent together: the auto-pipeline, the batched script call,
and, for a single-node client, the direct link they use instead of redis-py's Pipeline object."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from broker.redis.client import RedisClient


class DirectLink:
    """Round trips on connections of a single-node client's own pool (one Redis server, or a
    Sentinel's primary), kept by the pipeline between trips: the commands go as one packed write
    and their replies are read back in order. redis-py's Pipeline object costs ~40 µs of CPU more
    a round trip (the pool's lock and timeout, its retry wrapper, observability hooks, building and
    resetting the pipeline; benchmarks/redis_pipeline.py). A reply that is an error stays with its
    command. A connection that fails mid-trip is dropped (its place in the reply stream is unknown).
    A kept connection that the server closed while idle (a restart, a failover, an idle timeout) is
    replaced and the trip sent once more, where redis-py's Pipeline fails it: every command the
    broker pipelines may run twice (scripts keyed by holder or entry, HSET of the same value, and
    XADD, whose duplicate is an async event delivered at least once, as Lambda's are)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._idle: list[Any] = []

    @staticmethod
    def supports(redis: RedisClient) -> bool:
        return isinstance(redis, aioredis.Redis) and not getattr(redis, "single_connection_client", False)

    async def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self._idle:
            try:
                return await self._use(self._idle.pop(), commands)
            except RedisConnectionError:
                pass  # closed by the server while idle: once more, on a new connection
        return await self._use(await self._pool.get_connection(), commands)

    async def _use(self, conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One trip on ``conn``, kept for the next; dropped if the trip fails."""
        try:
            replies = await self._trip(conn, commands)
        except BaseException:
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
            raise
        self._idle.append(conn)
        return replies

    @staticmethod
    async def _trip(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        await conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies

    async def aclose(self) -> None:
        while self._idle:
            await self._pool.release(self._idle.pop())


class AutoPipeline:
    """Commands from concurrent tasks sent to Redis together (ioredis's auto-pipelining).

    Each caller awaits its own reply, but everything queued while earlier round trips are under
    way goes out in one pipeline: one write and one read per batch instead of per command (on a
    ``DirectLink`` for a single-node client, else redis-py's Pipeline, which routes a Cluster's
    commands by slot). Nothing waits on a timer: a lone command is sent on the next loop
    iteration, so under light load this is a plain round trip. Commands are not a transaction;
    each keeps its own reply or error. Scripts are loaded once; a ``NOSCRIPT`` reply (Redis was
    restarted or flushed) reloads the script and runs that call again on its own.
    """

    def __init__(self, redis: RedisClient, *, max_batch: int = 256, max_in_flight: int = 2,
                 direct: bool = True) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queued: list[_Queued] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._link = (DirectLink(redis.connection_pool)
                      if direct and isinstance(redis, aioredis.Redis) and DirectLink.supports(redis) else None)
        self.round_trips = 0

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
            self.round_trips += 1
            try:
                replies = await self._send_batch([item.command for item in batch])
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

    async def _send_batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if self._link is not None:
            return await self._link.run(commands)
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

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
        if self._link is not None:
            await self._link.aclose()


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
