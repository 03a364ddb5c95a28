"""Each replica follows the registry: API mappings started, restarted when changed (streams go on
from their checkpoints, SQS pollers with the new settings), stopped when deleted; and the pauses
and resumes of file mappings made through the API on any replica, until the file itself changes
``Enabled`` (then the override lapses and the file's value applies)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import structlog

from broker.config.models import EventSourceMapping
from broker.control.local import LocalMappings
from broker.control.registry import MappingRegistry
from broker.errors import BrokerError

log = structlog.get_logger("broker.app")


class RegistryFollower:
    def __init__(self, registry: MappingRegistry, *, mappings: LocalMappings,
                 file_uuids: Callable[[], set[str]], functions: Callable[[], Mapping[str, object]]) -> None:
        self._registry = registry
        self._mappings = mappings  # what this replica runs
        self._file_uuids = file_uuids  # file mappings win on a UUID both hold
        self._functions = functions
        self._applied: dict[str, str] = {}  # API mappings run here, as stored
        self._lock = asyncio.Lock()
        self.synced = False  # the registry was read and applied once: this replica knows every mapping

    def runs(self, uuid_: str, document: str) -> bool:
        """This replica runs the API mapping ``uuid_`` as stored in ``document``."""
        return self._applied.get(uuid_) == document

    async def apply(self) -> None:
        async with self._lock:
            try:
                stored = await self._registry.all()
            except BrokerError as exc:
                log.warning("api_mappings_unavailable", error=str(exc))
                return
            file_uuids = self._file_uuids()
            for uuid_, item in stored.items():
                if uuid_ in file_uuids or self._applied.get(uuid_) == item.document:
                    continue
                await self._forget(uuid_)
                esm = EventSourceMapping.model_validate(item.mapping)
                if esm.FunctionName not in self._functions():
                    log.error("mapping_not_started", mapping=uuid_,
                              error=f"function {esm.FunctionName} is not declared")
                    continue
                try:
                    await self._mappings.replace(esm, last_modified=item.last_modified)
                except BrokerError as exc:
                    log.error("mapping_not_started", mapping=uuid_, error=str(exc))
                    continue
                self._applied[uuid_] = item.document
                log.info("api_mapping_applied", mapping=uuid_, function=esm.FunctionName)
            for uuid_ in [u for u in self._applied if u not in stored]:
                await self._forget(uuid_)
                log.info("api_mapping_deleted", mapping=uuid_)
            if await self._apply_enabled_overrides() and not self.synced:
                self.synced = True
                log.info("api_mappings_synced", mappings=len(stored))

    def unapply(self, uuids: list[str]) -> None:
        """These API mappings stopped here (a reload replaced their function): the next ``apply``
        starts them again as stored."""
        for uuid_ in uuids:
            self._applied.pop(uuid_, None)

    async def _forget(self, uuid_: str) -> None:
        await self._mappings.remove(uuid_)
        self._applied.pop(uuid_, None)

    async def _apply_enabled_overrides(self) -> bool:
        try:
            overrides = await self._registry.enabled_overrides()
        except BrokerError as exc:
            log.warning("api_mappings_unavailable", error=str(exc))
            return False
        for uuid_, (enabled, file_then) in overrides.items():
            status = self._mappings.status(uuid_)
            if status is None or status.from_api:
                continue
            if status.file_enabled != file_then:
                with contextlib.suppress(BrokerError):
                    await self._registry.drop_enabled_override(uuid_)
                continue
            self._mappings.set_enabled(uuid_, enabled)
        return True
