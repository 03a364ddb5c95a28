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


async def test_setting_the_position_fences_every_reader_of_the_old_one(redis: Any) -> None:
    """After a rewind the holder of a lease can neither checkpoint nor renew; a replica that read the
    state before it can neither take a lease nor write a lost checkpoint back; sequences set keep
    the other shards' checkpoints and clear the shards named to be read again."""
    a = LeaseTable(redis, "m", "a", ttl_seconds=30)
    store = CheckpointStore(redis, "m")
    fence = await a.acquire("s0")
    assert fence is not None
    assert await store.put("s0", "100", fence)
    before = await store.state()
    assert (before.checkpoints, before.generation, before.position) == ({"s0": "100"}, "0", None)
    assert await store.set_start("AT_TIMESTAMP", 12.5) == 1
    assert not await store.put("s0", "150", fence), "the old holder's checkpoint is refused"
    assert not await a.renew("s0", fence)
    assert await a.acquire("s0", before.generation) is None, "a lease from a read before the rewind"
    assert not await store.restore("s0", "100", before.generation)
    after = await store.state()
    assert (after.checkpoints, after.generation, after.position) == ({}, "1", ("AT_TIMESTAMP", 12.5))
    assert await store.initial_shards(["s0", "s1", "s2"], 0.0) == {"s0", "s1", "s2"}, "listed at the next start"
    again = await a.acquire("s0", after.generation)
    assert again is not None
    assert again.epoch > fence.epoch
    assert await store.put("s0", "120", again)
    assert await store.put("s1", "7")
    assert await store.set_sequences({"s0": "110"}, ["s2"]) == 2
    assert (await store.state()).checkpoints == {"s0": "110", "s1": "7"}
    assert await store.initial_shards([], 0.0) == {"s0", "s1"}, "a shard read again starts at its start"
