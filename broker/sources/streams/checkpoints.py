"""Durable per-shard checkpoints in Redis (docs/design.md, "Redis layout").

Keys (hash-tagged per mapping, so a mapping's keys share a Redis Cluster slot):
    {broker:esm:<uuid>}:checkpoints   hash  shardId -> sequence number of the last record fully
                                            handled, or "SHARD_END" once the shard is finished
    {broker:esm:<uuid>}:meta          hash  started_at, initial_shards (JSON list): the shards
                                            that existed at the mapping's first start, which start
                                            at StartingPosition; shards found later start at
                                            TRIM_HORIZON so nothing written to them is skipped

A shard that ended is forgotten (checkpoint and lease fields) once one of its children has a
checkpoint: a child only starts after its parents were read to their end, so its checkpoint is the
proof, and the hashes stay as small as the stream's open shards.
"""

from __future__ import annotations

import json

from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.pipeline import AutoPipeline
from broker.redis.state import lua, translated
from broker.sources.streams.leases import Fence

SHARD_END = "SHARD_END"


class CheckpointStore:
    def __init__(self, redis: RedisClient, mapping_uuid: str, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)  # every shard's checkpoint writes share round trips
        self._checkpoints = keys.checkpoints(mapping_uuid)
        self._meta = keys.mapping_meta(mapping_uuid)
        self._lease_keys = keys.leases(mapping_uuid)
        self._fenced_put = redis.register_script(lua("broker.sources.streams", "checkpoint_put.lua"))
        self._prune = redis.register_script(lua("broker.sources.streams", "prune.lua"))

    @translated
    async def get(self, shard_id: str) -> str | None:
        value = await self._redis.hget(self._checkpoints, shard_id)
        return value.decode() if isinstance(value, bytes) else value

    @translated
    async def all(self) -> dict[str, str]:
        raw = await self._redis.hgetall(self._checkpoints)
        return {text(k): text(v) for k, v in raw.items()}

    @translated
    async def put(self, shard_id: str, sequence: str, fence: Fence | None = None) -> bool:
        """Write a checkpoint; with a ``fence``, only while that lease is still held (False if not)."""
        if fence is None:
            await self._pipeline.execute("HSET", self._checkpoints, shard_id, sequence)
            return True
        return bool(await self._pipeline.script(self._fenced_put, [*self._lease_keys, self._checkpoints],
                                                [fence.owner, shard_id, fence.epoch, sequence]))

    @translated
    async def restore(self, shard_id: str, sequence: str) -> bool:
        """Write back a checkpoint Redis lost, unless one is there again (never over a newer one)."""
        return bool(await self._redis.hsetnx(self._checkpoints, shard_id, sequence))

    @translated
    async def prune(self, shard_ids: set[str]) -> int:
        """Forget ended shards whose children have started: checkpoints and lease fields."""
        return int(await self._prune(keys=[*self._lease_keys, self._checkpoints], args=sorted(shard_ids)))

    @translated
    async def initial_shards(self, current: list[str], now: float) -> set[str]:
        """The shards that take StartingPosition: recorded once, at the mapping's first start."""
        await self._redis.hsetnx(self._meta, "initial_shards", json.dumps(sorted(current)))
        await self._redis.hsetnx(self._meta, "started_at", str(now))
        raw = await self._redis.hget(self._meta, "initial_shards")
        return set(json.loads(raw or "[]"))
