"""Shard leases shared by the replicas running a stream mapping (docs/design.md, "Redis layout"; KCL's lease table).

    {broker:esm:<uuid>}:lease_owner    hash shard -> replica id
    {broker:esm:<uuid>}:lease_expiry   hash shard -> Unix ms (Redis TIME)
    {broker:esm:<uuid>}:lease_epoch    hash shard -> fencing token, +1 whenever the lease changes hands
    {broker:esm:<uuid>}:replicas       zset replica -> expiry: who is alive for this mapping

Every operation is one Lua script (``scripts/lease_*.lua``) using Redis time. A checkpoint write
carries the epoch and is refused once the lease has moved on, so a replica that stalled past its
TTL (GC pause, SIGSTOP) can never overwrite its successor's progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.state import lua, translated


@dataclass(frozen=True)
class Fence:
    """What a checkpoint write must prove: who holds the lease, at which epoch."""

    owner: str
    epoch: int


class LeaseTable:
    def __init__(self, redis: RedisClient, mapping_uuid: str, replica: str, ttl_seconds: float) -> None:
        self.keys = keys.leases(mapping_uuid)
        self._replicas = keys.mapping_replicas(mapping_uuid)
        self._meta = keys.mapping_meta(mapping_uuid)
        self._redis = redis
        self.replica = replica
        self._ttl_ms = int(ttl_seconds * 1000)
        self._acquire = redis.register_script(lua("broker.sources.streams", "lease_acquire.lua"))
        self._renew = redis.register_script(lua("broker.sources.streams", "lease_renew.lua"))
        self._release = redis.register_script(lua("broker.sources.streams", "lease_release.lua"))
        self._beat = redis.register_script(lua("broker.sources.streams", "replica_beat.lua"))

    @staticmethod
    @translated
    async def _run(fn: Any, keys: list[str], args: list[Any]) -> Any:
        return await fn(keys=keys, args=args)

    async def acquire(self, shard: str, generation: str = "0") -> Fence | None:
        """The lease, unless another replica holds it or the mapping's position was set since
        ``generation`` was read."""
        granted, value = await self._run(self._acquire, [*self.keys, self._meta],
                                         [self.replica, shard, self._ttl_ms, generation])
        return Fence(self.replica, int(value)) if granted else None

    async def renew(self, shard: str, fence: Fence) -> bool:
        return not await self.renew_all({shard: fence})

    async def renew_all(self, held: dict[str, Fence]) -> set[str]:
        """Renew every lease in ``held`` in one call; the shards whose leases were lost."""
        if not held:
            return set()
        args: list[Any] = [self.replica, self._ttl_ms]
        for shard, fence in held.items():
            args += [shard, fence.epoch]
        lost = await self._run(self._renew, self.keys, args)
        return {s.decode() if isinstance(s, bytes) else str(s) for s in lost}

    async def release(self, shard: str, fence: Fence) -> bool:
        return bool(await self._run(self._release, self.keys, [self.replica, shard, fence.epoch]))

    @translated
    async def owners(self) -> dict[str, str]:
        """Shard -> replica, for the leases held now (the status)."""
        owner_key, expiry_key, _ = self.keys
        owners = await self._redis.hgetall(owner_key)
        expiries = await self._redis.hgetall(expiry_key)
        seconds, micros = await self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        return {text(shard): text(owner) for shard, owner in owners.items()
                if int(expiries.get(shard, 0)) > now_ms}

    async def beat(self, *, leaving: bool = False) -> int:
        """Mark this replica alive (or gone); returns how many replicas are alive."""
        return int(await self._run(self._beat, [self._replicas], [self.replica, 0 if leaving else self._ttl_ms]))
