"""What ``/readyz`` reports: the reasons a replica should not get traffic now (draining, still
starting, Redis not answering, an async consumer group not joined, AWS not answering)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from broker.errors import BrokerError


async def problems(*, draining: bool, started: bool, redis: Any, workers: Mapping[str, Any],
                   runners: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    if draining:
        found.append("draining")
    if not started:
        found.append("starting")
    if redis is not None:
        try:
            async with asyncio.timeout(2):
                await redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            found.append(f"redis: {exc.__class__.__name__}: {exc}")
    found += [f"async: consumer group of {name} not joined" for name, worker in workers.items() if not worker.ready]
    return found + await _aws_problems(runners)


async def _aws_problems(runners: Mapping[str, Any]) -> list[str]:
    """AWS is reachable if the first mapping's source answers a cheap call."""
    if not runners:
        return []
    runner = next(iter(runners.values()))
    try:
        async with asyncio.timeout(2):
            await runner.source.probe()
    except (BrokerError, TimeoutError) as exc:
        return [f"aws: {exc}"]
    return []
