"""Invocations shared by every replica's environments, through Redis (functions with an ``ApiPort``).

External environments reach the broker through a Kubernetes Service, so they connect to whichever
pod it picks: an invocation made on one replica must be able to run in an environment connected
to another. For such functions every replica puts its invocations on one Redis list, a bridge on
each replica takes one whenever one of its environments is waiting for work, and the result goes
back to the list of the replica that asked:

    {broker:fn:<name>}:rt:queue              list of invocation documents (JSON), oldest first
    {broker:fn:<name>}:rt:results:<replica>  list of result documents for that replica

If no environment takes an invocation in time it is taken back (LREM) and counts as a throttle;
if one took it but no result came (its replica died with the connection), the invocation fails as
unreachable, so the source's rules retry it (streams and SQS without spending attempts, async
events with backoff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

import structlog

from broker.errors import BrokerError, StateStoreError, TargetThrottled, TargetUnreachable
from broker.redis import keys
from broker.redis.client import RedisClient, raw
from broker.redis.state import guarded
from broker.retrying import Stopped, retrying
from broker.runtime.dispatch import Dispatcher
from broker.types import InvokeContext, InvokeResult

log = structlog.get_logger("broker.runtime")
_RESULT_TTL_MS = 300_000
_BLOCK_SECONDS = 1


class ReplicaBridge:
    def __init__(self, redis: RedisClient, *, function: str, replica: str, dispatcher: Dispatcher,
                 init_timeout: float) -> None:
        self._redis = redis
        self._function = function
        self._queue = keys.runtime_queue(function)
        self._replica = replica
        self._dispatcher = dispatcher
        self._init_timeout = init_timeout
        self._waiting: dict[str, asyncio.Future[InvokeResult]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        document = json.dumps({"request_id": ctx.request_id, "payload": base64.b64encode(payload).decode(),
                               "function_arn": ctx.function_arn, "function_name": ctx.function_name,
                               "timeout": limit_seconds, "trace_id": ctx.trace_id, "client_context": ctx.client_context,
                               "reply_to": self._replica,
                               "tags": {k: v for k, v in structlog.contextvars.get_contextvars().items()
                                        if isinstance(v, str | int | float)}})
        future: asyncio.Future[InvokeResult] = asyncio.get_running_loop().create_future()
        self._waiting[ctx.request_id] = future
        try:
            await guarded(self._redis.rpush(self._queue, document))
            try:
                return await asyncio.wait_for(asyncio.shield(future), self._init_timeout + limit_seconds + 2)
            except TimeoutError:
                with contextlib.suppress(StateStoreError):
                    if await guarded(self._redis.lrem(self._queue, 1, document)):
                        raise TargetThrottled(f"{ctx.function_name}: no execution environment took the invocation",
                                              reason="NoExecutionEnvironment") from None
                raise TargetUnreachable(f"{ctx.function_name}: the environment that took invocation {ctx.request_id} "
                                        "never answered (its broker replica may have stopped)") from None
        finally:
            self._waiting.pop(ctx.request_id, None)

    async def run(self) -> None:
        """The bridge (work for this replica's idle environments) and the reader of results."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._bridge())
            group.create_task(self._read_results())

    def stop(self) -> None:
        self._stopped.set()

    async def depth(self) -> int:
        return int(await guarded(self._redis.llen(self._queue)))

    async def _bridge(self) -> None:
        while not self._stopped.is_set():
            if not await self._dispatcher.wait_for_idle(1.0):
                continue
            raw = await self._pop(self._queue, "runtime_queue_unavailable")
            if raw is None:
                continue
            task = asyncio.ensure_future(self._run_here(raw))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0)  # let it queue locally before idleness is judged again

    async def _pop(self, key: str, unavailable: str) -> bytes | None:
        """The next entry of ``key`` (a blocking pop of a second); None if none came or the bridge
        stopped. While Redis is away it is said as ``unavailable`` and tried again each second."""
        try:
            reply = await retrying(lambda: guarded(self._redis.blpop([key], timeout=_BLOCK_SECONDS)),
                                   retryable=lambda e: isinstance(e, BrokerError) and e.retryable,
                                   delay=lambda _n, _e: 1.0, pause=self._pause,
                                   before_wait=lambda e, _n, _s: log.warning(unavailable, error=str(e)))
        except Stopped:
            return None
        return None if reply is None else raw(reply[1])

    async def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by stop(): False if it came."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)
        return not self._stopped.is_set()

    async def _run_here(self, raw: bytes) -> None:
        doc = json.loads(raw)
        ctx = InvokeContext(doc["request_id"], doc["function_name"], doc["function_arn"],
                            int((time.time() + doc["timeout"]) * 1000), doc.get("trace_id") or "",
                            doc.get("client_context"))
        try:
            with structlog.contextvars.bound_contextvars(**doc.get("tags", {})):  # the caller's log tags
                result = await self._dispatcher.invoke(base64.b64decode(doc["payload"]), ctx, doc["timeout"])
        except TargetThrottled:  # no environment of this replica took it after all: back to the head
            with contextlib.suppress(StateStoreError):
                await guarded(self._redis.lpush(self._queue, raw))
            return
        answer = json.dumps({"request_id": ctx.request_id, "payload": base64.b64encode(result.payload).decode(),
                             "error": result.function_error, "duration": result.duration_seconds, "log": result.log})
        key = keys.runtime_results(self._function, doc["reply_to"])
        try:
            await guarded(self._redis.rpush(key, answer))
            await guarded(self._redis.pexpire(key, _RESULT_TTL_MS))
        except StateStoreError as exc:
            log.warning("runtime_result_lost", request_id=ctx.request_id, error=str(exc))

    async def _read_results(self) -> None:
        key = keys.runtime_results(self._function, self._replica)
        while not self._stopped.is_set():
            raw = await self._pop(key, "runtime_results_unavailable")
            if raw is None:
                continue
            doc = json.loads(raw)
            future = self._waiting.get(doc["request_id"])
            if future is not None and not future.done():
                future.set_result(InvokeResult(base64.b64decode(doc["payload"]), doc.get("error"),
                                               float(doc.get("duration") or 0), log=doc.get("log") or ""))
