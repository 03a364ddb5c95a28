"""A live reload: a changed, valid config file applied to what runs (``config.changes`` decides
what changed). A function that cannot be built is left out, said in the log, and its mappings
wait for the next reload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from broker.api.auth import SigV4
from broker.config.changes import changes
from broker.config.models import Config
from broker.errors import BrokerError
from broker.observability.metrics import Metrics
from broker.running.functions import FunctionTable
from broker.running.mappings import MappingTable

log = structlog.get_logger("broker.app")


class Reloader:
    def __init__(self, *, config: Callable[[], Config], commit: Callable[[Config], None], functions: FunctionTable,
                 mappings: MappingTable, reapply: Callable[[list[str]], Awaitable[None]], auth: SigV4 | None,
                 metrics: Metrics) -> None:
        self._config = config
        self._commit = commit  # the new config becomes the running one
        self._functions = functions
        self._mappings = mappings
        self._reapply = reapply  # API mappings started again from the registry, on the functions as they are now
        self._auth = auth
        self._metrics = metrics

    async def __call__(self, new: Config) -> None:
        if self._auth is not None and new.broker.api.authenticated:  # API keys and their files, applied live
            self._auth.rotate(new.broker.api)
        change = changes(self._config(), new)
        if change.restart_required:
            log.warning("config_reload_restart_required", settings=change.restart_required)
        on_changed = self._api_mappings_of(change.functions)  # they run on the function being replaced
        await self._mappings.stop(change.stopped_mappings + on_changed)
        await self._functions.stop(sorted(change.functions))
        self._commit(new)
        for name in sorted(change.functions):
            if name not in new.functions:
                await self._functions.remove(name)
                continue
            try:
                await self._functions.add(name, new.functions[name])
            except BrokerError as exc:
                self._metrics.config_reload_failures.inc()
                log.error("function_not_started", function=name, error=str(exc))
                continue
            self._functions.start(name)
        for esm in new.event_source_mappings:
            u = esm.UUID or ""
            if u in self._mappings:
                self._mappings.file_changed_enabled(u, esm.Enabled)  # a pause made through the API survives
                continue
            try:
                await self._mappings.add(esm)
            except BrokerError as exc:
                log.error("mapping_not_started", mapping=u, error=str(exc))
                continue
            self._mappings.start(u)
        await self._reapply(on_changed)
        log.info("config_reloaded", mappings=len(list(self._mappings)), functions=len(new.functions),
                 restarted_mappings=len(change.stopped_mappings) + len(on_changed),
                 changed_functions=sorted(change.functions))

    def _api_mappings_of(self, functions: set[str]) -> list[str]:
        found = []
        for uuid in self._mappings:
            status = self._mappings.status(uuid)
            if status is not None and status.from_api and status.esm.FunctionName in functions:
                found.append(uuid)
        return found
