"""One event source mapping's lifecycle: Enabled/Disabled, ``State``, and its running source.

    Creating ──► Enabled ──(Enabled=false)──► Disabling ──► Disabled
                    ▲                                           │
                    └──────── Enabling ◄──(Enabled=true)────────┘
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.errors import BrokerError
from broker.observability.metrics import Metrics

log = structlog.get_logger("broker.mapping")
_RESTART_DELAY = 1.0


class Source(Protocol):
    async def run(self) -> None:
        """Process until ``stop()``; may be run again after it returns."""

    def stop(self) -> None:
        """Stop taking new work; ``run`` returns once work in hand is finished."""

    async def probe(self) -> None:
        """One cheap call to the source (readiness); raises BrokerError if it is unreachable."""


class MappingRunner:
    def __init__(self, esm: EventSourceMapping, source: Source, *, function_arn: str,
                 metrics: Metrics, clock: Clock) -> None:
        assert esm.UUID is not None
        self.esm = esm
        self.function_arn = function_arn
        self.source = source
        self.state = "Creating"
        self.state_transition_reason = "USER_INITIATED"
        self.last_modified = clock.time()
        self._clock = clock
        self._enabled = esm.Enabled
        self._shutdown = False
        self._changed = asyncio.Event()
        self._m_enabled = metrics.mapping_enabled.labels(esm.FunctionName, esm.UUID)

    @property
    def uuid(self) -> str:
        assert self.esm.UUID is not None
        return self.esm.UUID

    async def run(self) -> None:
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
            try:
                await self.source.run()
            except BrokerError as exc:  # the source, Redis or AWS failed: start over, never die
                log.error("mapping_failed", mapping=self.uuid, error=str(exc), retry_in_seconds=_RESTART_DELAY)
                await self._clock.sleep(_RESTART_DELAY)
                continue
            finally:
                self._m_enabled.set(0)
            log.info("mapping_stopped", mapping=self.uuid)

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

    def stop(self) -> None:
        """Shutdown: stop the source and end ``run``."""
        self._shutdown = True
        self.source.stop()
        self._changed.set()
