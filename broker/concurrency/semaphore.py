"""Concurrency permits in Redis: per-function ``ReservedConcurrentExecutions`` and the account's
unreserved pool (``account_concurrency`` minus every reservation), shared by all replicas.

Each pool is one sorted set (members: holder ids, scores: expiry in Redis time), so every script
touches one key and one Redis Cluster slot. Limits are read from the current config at acquire
time, so a reload applies at once. The holder renews while the work runs; if a renewal finds the
permit gone (the replica stalled past the TTL), the guarded task is cancelled and ``PermitLost``
raised in it, so work never runs unguarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from broker.clock import Clock
from broker.errors import InvokeError, StateStoreError, TargetThrottled
from broker.redis_state import AutoPipeline, lua, translated

log = structlog.get_logger("broker.permits")
ACCOUNT_POOL = "{broker:account}:permits"
RESERVED_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_REASON = "ConcurrentInvocationLimitExceeded"


class PermitLost(InvokeError):
    """The permit expired while the work ran (a stalled replica); the work was cancelled."""


@dataclass(frozen=True)
class Pool:
    key: str
    limit: int
    reason: str  # Lambda's throttle Reason when this pool is full


class Permits:
    def __init__(self, redis: Any, pools: Callable[[str], Pool], *, clock: Clock, replica: str,
                 ttl_seconds: float = 30.0, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)  # acquires and releases of concurrent work go together
        self._pools = pools
        self._clock = clock
        self._replica = replica
        self._ttl_ms = int(ttl_seconds * 1000)
        self._acquire = redis.register_script(lua("broker.concurrency", "acquire.lua"))
        self._renew = redis.register_script(lua("broker.concurrency", "renew.lua"))
        self._release = redis.register_script(lua("broker.concurrency", "release.lua"))
        self._count = redis.register_script(lua("broker.concurrency", "count.lua"))

    def pool(self, function: str) -> Pool:
        return self._pools(function)

    @translated
    async def in_use(self, function: str) -> int:
        return int(await self._count(keys=[self._pools(function).key]))

    @contextlib.asynccontextmanager
    async def hold(self, function: str) -> AsyncIterator[None]:
        """Hold one permit of ``function``'s pool for the block; TargetThrottled if the pool is full."""
        pool = self._pools(function)
        if pool.limit <= 0:
            raise TargetThrottled(f"{function}: concurrency is 0", reason=pool.reason)
        holder = f"{self._replica}:{uuid.uuid4().hex}"
        try:
            granted, used = await self._pipeline.script(self._acquire, [pool.key], [holder, pool.limit, self._ttl_ms])
        except (RedisError, OSError) as exc:
            raise StateStoreError(f"redis: {exc}") from exc
        if not granted:
            raise TargetThrottled(f"{function}: {used} of {pool.limit} permits in use", reason=pool.reason)
        task = asyncio.current_task()
        assert task is not None
        lost = asyncio.Event()
        renewer: asyncio.Task[None] | None = None

        def start_renewing() -> None:  # only work that outlives a third of the TTL needs a renewer task
            nonlocal renewer
            renewer = asyncio.ensure_future(self._keep(pool, holder, task, lost))

        timer = asyncio.get_running_loop().call_later(self._ttl_ms / 3000, start_renewing)
        try:
            yield
        except asyncio.CancelledError:
            if lost.is_set() and task.uncancel() == 0:
                raise PermitLost(f"{function}: the permit expired while the work ran") from None
            raise
        finally:
            timer.cancel()
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            if not lost.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await self._pipeline.script(self._release, [pool.key], [holder])

    async def _keep(self, pool: Pool, holder: str, task: asyncio.Task[Any], lost: asyncio.Event) -> None:
        """Renew now (a third of the TTL has passed) and every third of it after that."""
        while True:
            try:
                renewed = await self._renew(keys=[pool.key], args=[holder, self._ttl_ms])
            except (RedisError, OSError) as exc:  # Redis away: keep trying until the TTL decides
                log.warning("permit_renewal_failed", error=str(exc))
                renewed = True
            if not renewed:
                log.error("permit_lost", pool=pool.key, holder=holder)
                lost.set()
                task.cancel()
                return
            await self._clock.sleep(self._ttl_ms / 3000)
