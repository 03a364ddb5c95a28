"""Function tags (Lambda's TagResource, ListTags, UntagResource), kept in Redis for every replica."""

from __future__ import annotations

from typing import Any

from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.state import translated


class TagStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    @translated
    async def get(self, function: str) -> dict[str, str]:
        raw = await self._redis.hgetall(keys.tags(function))
        return {text(k): text(v) for k, v in raw.items()}

    @translated
    async def put(self, function: str, tags: dict[str, str]) -> None:
        if tags:
            mapping: dict[Any, Any] = dict(tags)
            await self._redis.hset(keys.tags(function), mapping=mapping)

    @translated
    async def delete(self, function: str, names: list[str]) -> None:
        await self._redis.hdel(keys.tags(function), *names)
