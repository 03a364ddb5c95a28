"""This replica's view, published to the status board every ``status_interval_seconds``: who it is
and whether it is ready, the mappings it runs (state, rates, batches in flight, pollers or the
shards it holds), and its execution environments by function. Publishing failures are logged and
tried again at the next interval; leaving removes the view at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog

from broker.clock import Clock
from broker.control.local import MappingStatus
from broker.errors import BrokerError
from broker.observability.metrics import Metrics
from broker.status.board import StatusBoard
from broker.status.history import History

log = structlog.get_logger("broker.status")
READINESS_SECONDS = 10.0  # readiness asks AWS and Redis: a ready replica asks again this often


def worst_age(described: Mapping[str, Any]) -> float | None:
    ages = [s["IteratorAgeMilliseconds"] for s in described.get("Shards", ())
            if s.get("IteratorAgeMilliseconds") is not None]
    return max(ages) if ages else None


class StatusReporter:
    def __init__(self, board: StatusBoard, *, replica: str, version: str, started_at: float, clock: Clock,
                 metrics: Metrics, interval: Callable[[], float], problems: Callable[[], Awaitable[list[str]]],
                 mappings: Callable[[], Iterable[tuple[MappingStatus, dict[str, Any]]]],
                 environments: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._board = board
        self._replica = replica
        self._version = version
        self._started_at = started_at
        self._clock = clock
        self._interval = interval
        self._problems = problems
        self._mappings = mappings
        self._environments = environments
        self.history = History(metrics)
        self._ready: tuple[float, list[str]] | None = None  # when readiness was last asked, and its answer

    async def view(self) -> dict[str, Any]:
        now = self._clock.time()
        described = [(status, details) for status, details in self._mappings() if status.esm.UUID]
        self.history.sample(now, {s.esm.UUID or "": worst_age(d) for s, d in described})
        problems = await self._readiness(now)
        mappings = {}
        for status, details in described:
            uuid = status.esm.UUID or ""
            records, errors = self.history.rates(uuid)
            mappings[uuid] = {"State": status.state, "LastProcessingResult": status.last_processing_result,
                              "RecordsPerSecond": records, "ErrorsPerSecond": errors,
                              "History": self.history.series(uuid), **details}
        return {
            "Replica": {"ReplicaId": self._replica, "Version": self._version, "StartedAt": round(self._started_at, 3),
                        "LastHeartbeat": round(now, 3), "Ready": not problems, "Problems": problems},
            "Mappings": mappings,
            "Functions": {name: {"Environments": dict(counts)} for name, counts in self._environments().items()},
        }

    async def _readiness(self, now: float) -> list[str]:
        """Readiness as last asked: again at every view while not ready, else every READINESS_SECONDS."""
        if self._ready is None or self._ready[1] or not 0 <= now - self._ready[0] < READINESS_SECONDS:
            try:
                self._ready = (now, await self._problems())
            except BrokerError as exc:
                self._ready = (now, [str(exc)])
        return self._ready[1]

    async def publish(self) -> None:
        view = await self.view()
        try:
            await self._board.publish(self._replica, view, now=self._clock.time(), ttl_seconds=3 * self._interval())
        except BrokerError as exc:
            log.warning("status_publish_failed", error=str(exc))

    async def leave(self) -> None:
        try:
            await self._board.leave(self._replica)
        except BrokerError as exc:
            log.warning("status_publish_failed", error=str(exc))
