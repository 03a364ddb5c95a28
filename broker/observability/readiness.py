"""What ``/readyz`` reports: the reasons a replica should not get traffic now (draining, still
starting, Redis not answering, an async consumer group not joined, AWS not answering)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker.errors import BrokerError, StateStoreError
from broker.redis.client import RedisClient
from broker.redis.state import guarded


async def problems(*, draining: bool, started: bool, redis: RedisClient | None, workers: Mapping[str, Any],
                   aws: Callable[[], Awaitable[None]] | None) -> list[str]:
    """``aws``: one cheap call to a mapping's source (raises BrokerError if AWS does not answer)."""
    found: list[str] = []
    if draining:
        found.append("draining")
    if not started:
        found.append("starting")
    if redis is not None:
        try:
            async with asyncio.timeout(2):
                await guarded(redis.ping())
        except (StateStoreError, TimeoutError) as exc:
            found.append(str(exc) if isinstance(exc, StateStoreError) else f"redis: TimeoutError: {exc}")
    found += [f"async: consumer group of {name} not joined" for name, worker in workers.items() if not worker.ready]
    if aws is not None:
        try:
            async with asyncio.timeout(2):
                await aws()
        except (BrokerError, TimeoutError) as exc:
            found.append(f"aws: {exc}")
    return found
