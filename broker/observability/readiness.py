"""What ``/readyz`` reports: the reasons a replica should not get traffic now (draining, still
starting, Redis not answering, an async consumer group not joined, AWS not answering)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from broker.errors import BrokerError, StateStoreError
from broker.redis.state import guarded


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
                await guarded(redis.ping())
        except (StateStoreError, TimeoutError) as exc:
            found.append(str(exc) if isinstance(exc, StateStoreError) else f"redis: TimeoutError: {exc}")
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
