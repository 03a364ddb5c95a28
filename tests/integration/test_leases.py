"""The lease scripts against a real redis-server with short TTLs: take, renew, expire, fence."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.sources.streams.checkpoints import CheckpointStore
from broker.sources.streams.leases import LeaseTable


async def test_one_holder_at_a_time_and_epochs_fence(redis: Any) -> None:
    """A held lease is refused to others; once it expires another replica takes it with a higher
    epoch, the old holder can neither renew nor checkpoint, the new one can."""
    a = LeaseTable(redis, "m", "a", ttl_seconds=0.3)
    b = LeaseTable(redis, "m", "b", ttl_seconds=0.3)
    store = CheckpointStore(redis, "m")
    fence_a = await a.acquire("s0")
    assert fence_a is not None
    assert await b.acquire("s0") is None
    assert await a.renew("s0", fence_a)
    assert await store.put("s0", "100", fence_a)
    await asyncio.sleep(0.4)  # a stalls past its TTL
    fence_b = await b.acquire("s0")
    assert fence_b is not None
    assert fence_b.epoch == fence_a.epoch + 1
    assert not await a.renew("s0", fence_a)
    assert not await store.put("s0", "150", fence_a)
    assert await store.put("s0", "200", fence_b)
    assert await store.get("s0") == "200"


async def test_release_hands_off_at_once(redis: Any) -> None:
    """A released lease is free immediately; only its holder can release it."""
    a = LeaseTable(redis, "m", "a", ttl_seconds=30)
    b = LeaseTable(redis, "m", "b", ttl_seconds=30)
    fence = await a.acquire("s0")
    assert fence is not None
    assert not await b.release("s0", fence)
    assert await a.release("s0", fence)
    assert await b.acquire("s0") is not None


async def test_replica_heartbeats_count_the_living(redis: Any) -> None:
    """Replicas that stop beating drop out of the count after the TTL; leaving drops at once."""
    a = LeaseTable(redis, "m", "a", ttl_seconds=0.3)
    b = LeaseTable(redis, "m", "b", ttl_seconds=0.3)
    assert await a.beat() == 1
    assert await b.beat() == 2
    await asyncio.sleep(0.4)
    assert await a.beat() == 1
    assert await b.beat() == 2
    assert await b.beat(leaving=True) == 1
