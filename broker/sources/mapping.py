"""One event source mapping's lifecycle: Enabled/Disabled, ``State``, and its running source.

    Creating ──► Enabled ──(Enabled=false)──► Disabling ──► Disabled
                    ▲                                           │
                    └──────── Enabling ◄──(Enabled=true)────────┘
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry

from broker.clock import Clock, SystemClock
from broker.config.models import EventSourceMapping
from broker.errors import describe, only_broker_errors
from broker.observability.metrics import Metrics
from broker.retrying import backoff_delay

log = structlog.get_logger("broker.mapping")
_RESTART_BASE_SECONDS = 1.0
_RESTART_MAX_SECONDS = 30.0
_HEALTHY_RUN_SECONDS = 60.0  # a run this long resets the restart backoff


class Source(Protocol):
    last_processing_result: str  # Lambda's LastProcessingResult (shown for stream mappings)

    async def run(self) -> None:
        """Process until ``stop()``; may be run again after it returns."""

    def stop(self) -> None:
        """Stop taking new work; ``run`` returns once work in hand is finished."""

    async def probe(self) -> None:
        """One cheap call to the source (readiness); raises BrokerError if it is unreachable."""

    def describe(self) -> dict[str, Any]:
        """What the status shows of this replica's part of the mapping (pollers, shards, batches)."""


class MappingRunner:
    def __init__(self, esm: EventSourceMapping, source: Source, *, function_arn: str,
                 metrics: Metrics | None, clock: Clock | None, from_api: bool = False) -> None:
        assert esm.UUID is not None
        self.esm = esm
        self.function_arn = function_arn
        self.source = source
        self.from_api = from_api  # created through Lambda's API (kept in Redis), not declared in the file
        self.state = "Creating"
        self.state_transition_reason = "USER_INITIATED"
        self._clock = clock or SystemClock()
        self.last_modified = self._clock.time()
        self._enabled = esm.Enabled
        self._file_enabled = esm.Enabled  # what the config file says; the API may differ from it
        self._shutdown = False
        self._changed = asyncio.Event()
        self._m_enabled = (metrics or Metrics(CollectorRegistry())).mapping_enabled.labels(esm.FunctionName, esm.UUID)

    @property
    def uuid(self) -> str:
        assert self.esm.UUID is not None
        return self.esm.UUID

    async def run(self) -> None:
        failures = 0
        while not self._shutdown:
            if not self._enabled:
                self.state = "Disabled"
                self._m_enabled.set(0)
                self._changed.clear()
                await self._changed.wait()
                continue
            self.state = "Enabled"
            self._m_enabled.set(1)
            log.info("mapping_started", mapping=self.uuid, source=self.esm.EventSourceArn)
            started = self._clock.monotonic()
            try:
                await self.source.run()
            except Exception as exc:  # the source, Redis or AWS failed: start over, never die
                errors = only_broker_errors(exc)  # the source's task groups wrap them in groups
                if errors is None:
                    raise  # a bug: let it end the process, named in the log
                if self._clock.monotonic() - started >= _HEALTHY_RUN_SECONDS:
                    failures = 0
                delay = backoff_delay(failures, base=_RESTART_BASE_SECONDS, cap=_RESTART_MAX_SECONDS)
                failures += 1
                log.error("mapping_failed", mapping=self.uuid, error=describe(list(errors)),
                          retry_in_seconds=round(delay, 2))
                await self._pause(delay)
                continue
            finally:
                self._m_enabled.set(0)
            log.info("mapping_stopped", mapping=self.uuid)

    async def _pause(self, seconds: float) -> None:
        """Sleep before a restart, cut short by stop() or a pause/resume."""
        self._changed.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

    def set_enabled(self, enabled: bool) -> None:
        """Pause or resume (``PUT .../event-source-mappings/{UUID}`` or a config reload)."""
        if enabled == self._enabled:
            return
        self._enabled = enabled
        self.esm.Enabled = enabled
        self.last_modified = self._clock.time()
        if enabled:
            self.state = "Enabling"
        else:
            self.state = "Disabling"
            self.source.stop()
        self._changed.set()

    @property
    def file_enabled(self) -> bool:
        return self._file_enabled

    def file_changed_enabled(self, enabled: bool) -> None:
        """A config reload: the file's ``Enabled`` applies only if the file changed it, so a pause or
        resume made through the API is never undone by an unrelated edit of the file."""
        if enabled != self._file_enabled:
            self._file_enabled = enabled
            self.set_enabled(enabled)

    def stop(self) -> None:
        """Shutdown: stop the source and end ``run``."""
        self._shutdown = True
        self.source.stop()
        self._changed.set()
