"""Durable per-shard checkpoints in Redis (docs/design.md, "Redis layout").

Keys (hash-tagged per mapping, so a mapping's keys share a Redis Cluster slot):
    {broker:esm:<uuid>}:checkpoints   hash  shardId -> sequence number of the last record fully
                                            handled, or "SHARD_END" once the shard is finished
    {broker:esm:<uuid>}:meta          hash  started_at, initial_shards (JSON list): the shards
                                            that existed at the mapping's first start, which start
                                            at StartingPosition; shards found later start at
                                            TRIM_HORIZON so nothing written to them is skipped;
                                            generation and position: how often, and to where, the
                                            mapping's position was set (a rewind)

A rewind (``set_start``, ``set_sequences``) is one script that frees every lease at a new epoch, sets
the checkpoints and raises the generation: a consumer running the mapping cannot write a checkpoint
afterwards, and a replica that read the state before it cannot take a lease or write one back.

A shard that ended is forgotten (checkpoint and lease fields) once one of its children has a
checkpoint: a child only starts after its parents were read to their end, so its checkpoint is the
proof, and the hashes stay as small as the stream's open shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.pipeline import AutoPipeline
from broker.redis.state import lua, translated
from broker.sources.streams.leases import Fence

SHARD_END = "SHARD_END"


@dataclass(frozen=True)
class Saved:
    """A mapping's checkpoints with the generation they belong to, read at once."""

    checkpoints: dict[str, str]
    generation: str  # "0" until the position is first set
    position: tuple[str, float | None] | None  # the StartingPosition a rewind set, if one did


class CheckpointStore:
    def __init__(self, redis: RedisClient, mapping_uuid: str, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)  # every shard's checkpoint writes share round trips
        self._checkpoints = keys.checkpoints(mapping_uuid)
        self._meta = keys.mapping_meta(mapping_uuid)
        self._lease_keys = keys.leases(mapping_uuid)
        self._fenced_put = redis.register_script(lua("broker.sources.streams", "checkpoint_put.lua"))
        self._prune = redis.register_script(lua("broker.sources.streams", "prune.lua"))
        self._state = redis.register_script(lua("broker.sources.streams", "state.lua"))
        self._restore = redis.register_script(lua("broker.sources.streams", "checkpoint_restore.lua"))
        self._set = redis.register_script(lua("broker.sources.streams", "position_set.lua"))

    @translated
    async def get(self, shard_id: str) -> str | None:
        value = await self._redis.hget(self._checkpoints, shard_id)
        return value.decode() if isinstance(value, bytes) else value

    @translated
    async def all(self) -> dict[str, str]:
        raw = await self._redis.hgetall(self._checkpoints)
        return {text(k): text(v) for k, v in raw.items()}

    @translated
    async def state(self) -> Saved:
        flat, generation, position = await self._state(keys=[self._checkpoints, self._meta])
        pairs = [text(v) for v in flat]
        start = None
        if position:
            doc = json.loads(text(position))
            start = (str(doc["StartingPosition"]), doc.get("StartingPositionTimestamp"))
        return Saved(dict(zip(pairs[::2], pairs[1::2], strict=True)), text(generation) if generation else "0", start)

    @translated
    async def set_start(self, position: str, timestamp: float | None) -> int:
        """Every shard starts again at ``position``; the new generation."""
        doc = json.dumps({"StartingPosition": position, "StartingPositionTimestamp": timestamp})
        return int(await self._set(keys=[*self._lease_keys, self._checkpoints, self._meta], args=["start", doc]))

    @translated
    async def set_sequences(self, sequences: dict[str, str], again: list[str]) -> int:
        """Shards resume after these sequence numbers, the shards ``again`` from their start; the
        other shards keep their checkpoints. The new generation."""
        args: list[str] = ["sequences", "", json.dumps(sorted(again))]
        for shard, sequence in sequences.items():
            args += [shard, sequence]
        return int(await self._set(keys=[*self._lease_keys, self._checkpoints, self._meta], args=args))

    @translated
    async def put(self, shard_id: str, sequence: str, fence: Fence | None = None) -> bool:
        """Write a checkpoint; with a ``fence``, only while that lease is still held (False if not)."""
        if fence is None:
            await self._pipeline.execute("HSET", self._checkpoints, shard_id, sequence)
            return True
        return bool(await self._pipeline.script(self._fenced_put, [*self._lease_keys, self._checkpoints],
                                                [fence.owner, shard_id, fence.epoch, sequence]))

    @translated
    async def restore(self, shard_id: str, sequence: str, generation: str) -> bool:
        """Write back a checkpoint Redis lost, unless one is there again (never over a newer one) or
        the position was set since ``generation`` was read."""
        return bool(await self._restore(keys=[self._checkpoints, self._meta], args=[shard_id, sequence, generation]))

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
