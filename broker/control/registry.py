"""Event source mappings created through Lambda's API, kept in Redis so every replica runs them and
they survive restarts of all of them:

    {broker}:mappings   hash  UUID -> JSON {"mapping": <EventSourceMapping fields>, "last_modified": epoch s}

File mappings stay in the file (declared); the API may pause and resume them, which is kept in
``{broker}:mapping-enabled`` with the file's value at the time, so every replica applies it, it
survives restarts and reloads, and it lapses once the file itself changes ``Enabled``. Each replica
reads both hashes every second and starts, restarts (changed) or stops (deleted) what it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.redis import keys
from broker.redis.client import RedisClient
from broker.redis.state import translated

KEY = keys.MAPPINGS
PAUSES = keys.MAPPING_ENABLED  # file mapping UUID -> {"enabled": bool, "file": the file's value then}


@dataclass(frozen=True)
class StoredMapping:
    uuid: str
    mapping: dict[str, Any]
    last_modified: float

    @property
    def document(self) -> str:
        return json.dumps({"mapping": self.mapping, "last_modified": self.last_modified}, sort_keys=True)


class MappingRegistry:
    def __init__(self, redis: RedisClient) -> None:
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

    @translated
    async def enabled_overrides(self) -> dict[str, tuple[bool, bool]]:
        """File mappings paused or resumed through the API: UUID -> (Enabled set, the file's Enabled then)."""
        raw = await self._redis.hgetall(PAUSES)
        out = {}
        for key, value in raw.items():
            doc = json.loads(value)
            out[key.decode() if isinstance(key, bytes) else str(key)] = (bool(doc["enabled"]), bool(doc["file"]))
        return out

    @translated
    async def set_enabled_override(self, uuid: str, enabled: bool, file_enabled: bool) -> None:
        await self._redis.hset(PAUSES, uuid, json.dumps({"enabled": enabled, "file": file_enabled}))

    @translated
    async def drop_enabled_override(self, uuid: str) -> None:
        await self._redis.hdel(PAUSES, uuid)
