"""Gauges read at scrape time: permits in use and limits per function, and invocations waiting for
an execution environment (all replicas, from Redis)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from broker.errors import BrokerError
from broker.observability.metrics import Metrics


class _Pending(Protocol):
    async def pending(self) -> int: ...


async def refresh(metrics: Metrics, *, runtimes: Mapping[str, _Pending], functions: Sequence[str],
                  limit: Callable[[str], int], in_use: Callable[[str], Awaitable[int]]) -> None:
    for name, host in list(runtimes.items()):
        with contextlib.suppress(BrokerError):
            metrics.runtime_pending.labels(name).set(await host.pending())
    for name in functions:
        metrics.permits_limit.labels(name).set(limit(name))
        with contextlib.suppress(BrokerError):
            metrics.permits_in_use.labels(name).set(await in_use(name))
