"""A function's ``EventInvokeConfig``: the config file's, or the one set through Lambda's
EventInvokeConfig API (docs/aws-semantics.md, "EventInvokeConfig"), shared by all replicas through Redis.

    {broker:fn:<name>}:invoke-config   JSON {"config": {...} | null, "LastModified": epoch seconds}

Without that key the config file's ``EventInvokeConfig`` applies (if the file sets one). Once the API
has put, updated or deleted the function's config, the key decides (``config: null`` after a
delete: Lambda's defaults, no destinations), until it is deleted from Redis. Workers read it at
most once a second, so a change reaches every replica within about a second.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import structlog

from broker.clock import Clock
from broker.config.models import EventInvokeConfigSpec
from broker.errors import BrokerError
from broker.redis import keys
from broker.redis.client import RedisClient
from broker.redis.state import translated

log = structlog.get_logger("broker.async")
FIELDS = ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class StoredConfig:
    """The settings given (omitted ones absent, as Lambda echoes them) and when."""

    settings: dict[str, Any]
    last_modified: float

    @functools.cached_property
    def spec(self) -> EventInvokeConfigSpec:
        return EventInvokeConfigSpec.model_validate(self.settings)


_DEFAULTS = EventInvokeConfigSpec()  # read on every event: built once


class InvokeConfigStore:
    def __init__(self, redis: RedisClient, function: str, file_config: EventInvokeConfigSpec | None, *,
                 clock: Clock, loaded_at: float) -> None:
        self._redis = redis
        self.key = keys.invoke_config(function)
        self._clock = clock
        self._file = (StoredConfig(file_config.model_dump(exclude_unset=True, exclude_none=True), loaded_at)
                      if file_config is not None else None)
        self._current: StoredConfig | None = self._file
        self._read_at = float("-inf")

    @property
    def current(self) -> EventInvokeConfigSpec:
        """What workers apply now (Lambda's defaults when nothing is configured)."""
        return self._current.spec if self._current else _DEFAULTS

    async def refresh(self) -> None:
        """Re-read the shared config if a second has passed; on a Redis error keep the last one."""
        now = self._clock.monotonic()
        if now - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = now
        try:
            await self.get()
        except BrokerError as exc:
            log.warning("invoke_config_refresh_failed", error=str(exc))

    @translated
    async def get(self) -> StoredConfig | None:
        raw = await self._redis.get(self.key)
        if raw is None:
            self._current = self._file
        else:
            doc = json.loads(raw)
            self._current = StoredConfig(doc["config"], doc["LastModified"]) if doc["config"] is not None else None
        return self._current

    @translated
    async def put(self, settings: dict[str, Any]) -> StoredConfig:
        stored = StoredConfig({k: settings[k] for k in FIELDS if settings.get(k) is not None}, self._clock.time())
        await self._redis.set(self.key, json.dumps({"config": stored.settings, "LastModified": stored.last_modified}))
        self._current = stored
        return stored

    @translated
    async def delete(self) -> None:
        await self._redis.set(self.key, json.dumps({"config": None, "LastModified": self._clock.time()}))
        self._current = None
