"""Concurrency permits in Redis: per-function ``ReservedConcurrentExecutions`` and the account's
unreserved pool (``account_concurrency`` minus every reservation), shared by all replicas.

Each pool is a sorted set of holders (scores: expiry in Redis time) with a queue of waiters beside
it (scores: arrival in Redis time), all under one hash tag, so every script touches one Redis
Cluster slot. Limits are read from the current config at acquire time, so a reload applies at once.
The holder renews while the work runs; if a renewal finds the permit gone (the replica stalled past
the TTL), the guarded task is cancelled and ``PermitLost`` raised in it, so work never runs unguarded.

Fairness. Work that has records or an event in hand (stream batches, async events) may wait for a
permit: it queues, and a permit goes to the longest-waiting caller of any replica before anyone who
arrives later, including callers that do not wait (sync invokes, which are throttled at once, as
in Lambda, while the pool is full or others are queued). Waiters ask again when a permit is released
in this replica, and at least every ``_WAIT_POLL_MAX`` seconds for releases elsewhere; a waiter that
stops asking (gave up, crashed) leaves the queue after ``_WAIT_TTL_MS``. The grant tells the holder
whether the pool was contended, so SQS pollers, which hold a permit before they receive, can keep
their long polls short while others need the permit.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from broker.clock import Clock
from broker.errors import InvokeError, StateStoreError, TargetThrottled
from broker.redis import keys
from broker.redis.client import RedisClient
from broker.redis.pipeline import AutoPipeline, ScriptBatch
from broker.redis.state import guarded, lua, translated

log = structlog.get_logger("broker.permits")
ACCOUNT_POOL = keys.ACCOUNT_PERMITS
RESERVED_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_REASON = "ConcurrentInvocationLimitExceeded"
_WAIT_TTL_MS = 5000
_WAIT_POLL_MIN = 0.02
_WAIT_POLL_MAX = 0.25


class PermitLost(InvokeError):
    """The permit expired while the work ran (a stalled replica); the work was cancelled."""


@dataclass(frozen=True)
class Pool:
    key: str
    limit: int
    reason: str  # Lambda's throttle Reason when this pool is full

    @property
    def keys(self) -> list[str]:
        """Holders, the queue of waiters (arrival) and their expiry: one hash tag, one slot."""
        return [self.key, f"{self.key}:waiters", f"{self.key}:waiting"]


@dataclass(frozen=True)
class Grant:
    """What a holder learns with its permit: whether others are waiting or the pool is now full."""

    contended: bool = False


UNCONTENDED = Grant()


class Permits:
    def __init__(self, redis: RedisClient, pools: Callable[[str], Pool], *, clock: Clock, replica: str,
                 ttl_seconds: float = 30.0, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)  # acquires and releases of concurrent work go together
        self._pools = pools
        self._clock = clock
        self._replica = replica
        self._ttl_ms = int(ttl_seconds * 1000)
        # Concurrent acquires and releases of this replica go to Redis as one script call each.
        self._acquire = ScriptBatch(self._pipeline, redis.register_script(lua("broker.concurrency", "acquire.lua")))
        self._renew = redis.register_script(lua("broker.concurrency", "renew.lua"))
        self._release = ScriptBatch(self._pipeline, redis.register_script(lua("broker.concurrency", "release.lua")))
        self._count = redis.register_script(lua("broker.concurrency", "count.lua"))
        self._freed: dict[str, asyncio.Event] = {}  # pool key -> set when this replica releases one
        self._holder_prefix = f"{replica}:{uuid.uuid4().hex[:16]}:"  # + a count: unique, and cheaper than a uuid each
        self._holds = 0

    def pool(self, function: str) -> Pool:
        return self._pools(function)

    @translated
    async def in_use(self, function: str) -> int:
        return int(await self._count(keys=[self._pools(function).key]))

    @contextlib.asynccontextmanager
    async def hold(self, function: str, *, wait_seconds: float = 0.0) -> AsyncIterator[Grant]:
        """Hold one permit of ``function``'s pool for the block, waiting in line for up to
        ``wait_seconds``; TargetThrottled if none is free (or none came in time)."""
        pool = self._pools(function)
        if pool.limit <= 0:
            raise TargetThrottled(f"{function}: concurrency is 0", reason=pool.reason)
        self._holds += 1
        holder = f"{self._holder_prefix}{self._holds}"
        grant = await guarded(self._take(function, pool, holder, wait_seconds))
        task = asyncio.current_task()
        assert task is not None
        state = _Holding()
        renewer: asyncio.Task[None] | None = None

        def start_renewing() -> None:  # only work that outlives a third of the TTL needs a renewer task
            nonlocal renewer
            renewer = asyncio.ensure_future(self._keep(pool, holder, task, state))

        timer = asyncio.get_running_loop().call_later(self._ttl_ms / 3000, start_renewing)
        try:
            yield grant
        except asyncio.CancelledError:
            if state.lost and task.uncancel() == 0:
                raise PermitLost(f"{function}: the permit expired while the work ran") from None
            raise
        finally:
            timer.cancel()
            state.done = True
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            if not state.lost:
                await self._give_back(pool, holder)

    async def _take(self, function: str, pool: Pool, holder: str, wait_seconds: float) -> Grant:
        """Acquire, queueing in arrival order while ``wait_seconds`` lasts."""
        deadline = self._clock.monotonic() + wait_seconds
        pause = _WAIT_POLL_MIN
        wait_ttl = _WAIT_TTL_MS if wait_seconds > 0 else 0
        try:
            while True:
                granted, used, queued = await self._acquire(pool.keys, [holder, pool.limit, self._ttl_ms, wait_ttl])
                if granted:
                    return Grant(contended=bool(queued) or int(used) >= pool.limit)
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    if wait_ttl:
                        await self._give_back(pool, holder)
                    raise TargetThrottled(f"{function}: {used} of {pool.limit} permits in use, {queued} waiting",
                                          reason=pool.reason)
                await self._released(pool.key, min(pause, remaining))
                pause = min(pause * 2, _WAIT_POLL_MAX)
        except asyncio.CancelledError:
            if wait_ttl:
                await asyncio.shield(self._give_back(pool, holder))
            raise

    async def _released(self, key: str, seconds: float) -> None:
        """Until a permit of ``key`` is released in this replica, or ``seconds`` have passed."""
        event = self._freed.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _give_back(self, pool: Pool, holder: str) -> None:
        with contextlib.suppress(StateStoreError):  # an unreleased permit expires with its TTL
            await guarded(self._release(pool.keys, [holder]))
        event = self._freed.pop(pool.key, None)
        if event is not None:
            event.set()  # waiters of this replica ask again now

    async def _keep(self, pool: Pool, holder: str, task: asyncio.Task[Any], state: _Holding) -> None:
        """Renew now (a third of the TTL has passed) and every third of it after that, until done
        (a flag as well as the cancellation: redis-py can swallow a cancellation)."""
        while not state.done:
            try:
                renewed = await guarded(self._renew(keys=[pool.key], args=[holder, self._ttl_ms]))
            except StateStoreError as exc:  # Redis away: keep trying until the TTL decides
                log.warning("permit_renewal_failed", error=str(exc))
                renewed = True
            if not renewed and not state.done:
                log.error("permit_lost", pool=pool.key, holder=holder)
                state.lost = True
                task.cancel()
                return
            if not state.done:
                await asyncio.sleep(self._ttl_ms / 3000)


@dataclass(slots=True)
class _Holding:
    done: bool = False  # the work ended: the renewer stops
    lost: bool = False  # a renewal found the permit gone: the work was cancelled
