"""What the status reads from Redis itself at request time, for every replica at once: a stream
mapping's checkpoints and live lease owners, a function's permits and async queue, and (for a
function with execution environments) the invocations waiting for one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from broker.async_invoke.queue import AsyncQueue
from broker.clock import Clock
from broker.concurrency.permits import Permits
from broker.redis.client import RedisClient
from broker.sources.streams.checkpoints import CheckpointStore
from broker.sources.streams.leases import LeaseTable


class _Pending(Protocol):
    async def pending(self) -> int: ...


class Facts:
    def __init__(self, redis: RedisClient, *, permits: Permits, queues: Mapping[str, AsyncQueue],
                 runtimes: Mapping[str, _Pending], clock: Clock) -> None:
        self._redis = redis
        self._permits = permits
        self._queues = queues
        self._runtimes = runtimes
        self._clock = clock

    async def shards(self, mapping_uuid: str) -> tuple[dict[str, str], dict[str, str]]:
        """The mapping's checkpoints and the replicas holding its shards' leases now."""
        checkpoints = (await CheckpointStore(self._redis, mapping_uuid).state()).checkpoints
        owners = await LeaseTable(self._redis, mapping_uuid, "", 0).owners()
        return checkpoints, owners

    async def function(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"ConcurrencyLimit": self._permits.pool(name).limit,
                               "InUse": await self._permits.in_use(name)}
        host = self._runtimes.get(name)
        if host is not None:
            out["Waiting"] = await host.pending()
        queue = self._queues.get(name) or AsyncQueue(self._redis, name)
        out["AsyncQueue"] = await queue.summary(self._clock.time())
        return out
