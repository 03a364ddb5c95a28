"""Event source mappings created through Lambda's API, kept in Redis so every replica runs them and
they survive restarts of all of them:

    {broker}:mappings   hash  UUID -> JSON {"mapping": <EventSourceMapping fields>, "last_modified": epoch s}

File mappings stay in the file (declared); the API may pause and resume them. Each replica reads
the hash every second and starts, restarts (changed) or stops (deleted) what it runs to match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.redis_state import translated

KEY = "{broker}:mappings"


@dataclass(frozen=True)
class StoredMapping:
    uuid: str
    mapping: dict[str, Any]
    last_modified: float

    @property
    def document(self) -> str:
        return json.dumps({"mapping": self.mapping, "last_modified": self.last_modified}, sort_keys=True)


class MappingRegistry:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    @translated
    async def all(self) -> dict[str, StoredMapping]:
        raw = await self._redis.hgetall(KEY)
        out = {}
        for key, value in raw.items():
            doc = json.loads(value)
            uuid = key.decode() if isinstance(key, bytes) else str(key)
            out[uuid] = StoredMapping(uuid, doc["mapping"], float(doc["last_modified"]))
        return out

    @translated
    async def put(self, stored: StoredMapping) -> None:
        await self._redis.hset(KEY, stored.uuid, stored.document)

    @translated
    async def delete(self, uuid: str) -> bool:
        return bool(await self._redis.hdel(KEY, uuid))
