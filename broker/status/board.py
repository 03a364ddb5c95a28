"""The status board in Redis: each replica's view, kept with its expiry, so a replica that died
leaves the document once its view expires (three publishing intervals).

    {broker}:status   hash  replica id -> JSON {"expires": epoch s, "view": {...}}

One key, so it reads in one call on a Redis Cluster too; expired views are removed by the reader.
"""

from __future__ import annotations

import json
from typing import Any

from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.state import translated


class StatusBoard:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    @translated
    async def publish(self, replica: str, view: dict[str, Any], *, now: float, ttl_seconds: float) -> None:
        await self._redis.hset(keys.STATUS, replica, json.dumps({"expires": now + ttl_seconds, "view": view},
                                                                separators=(",", ":")))

    @translated
    async def leave(self, replica: str) -> None:
        await self._redis.hdel(keys.STATUS, replica)

    @translated
    async def views(self, now: float) -> list[dict[str, Any]]:
        """Every replica's view that has not expired, by replica id."""
        out, gone = [], []
        for replica, raw in (await self._redis.hgetall(keys.STATUS)).items():
            doc = json.loads(raw)
            if float(doc.get("expires", 0)) < now:
                gone.append(text(replica))
            else:
                out.append(doc["view"])
        if gone:
            await self._redis.hdel(keys.STATUS, *gone)
        return sorted(out, key=lambda v: str(v["Replica"]["ReplicaId"]))
