"""The event source mappings this replica runs: each built on its function and source, run under
its key while the broker serves, and what the API and the control plane see of them
(``control.local.LocalMappings``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from broker.arns import source_kind
from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.control.local import MappingStatus
from broker.errors import StartupError
from broker.observability.metrics import Metrics
from broker.running.records import Running, RunningMapping
from broker.running.tasks import Tasks
from broker.sources.factory import SourceFactory
from broker.sources.mapping import MappingRunner


class MappingTable:
    def __init__(self, running: Running, *, sources: SourceFactory, tasks: Tasks, metrics: Metrics, clock: Clock,
                 drain_timeout: Callable[[], float]) -> None:
        self._records = running.mapping_records
        self._functions = running.functions
        self._sources = sources
        self._tasks = tasks
        self._metrics = metrics
        self._clock = clock
        self._drain_timeout = drain_timeout

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._records

    async def add(self, esm: EventSourceMapping, *, from_api: bool = False) -> MappingRunner:
        """Build the mapping on its running function (checked against its queue or stream); it runs
        with ``start``. Raises BrokerError if it cannot be built."""
        function = self._functions.get(esm.FunctionName)
        if function is None:
            raise StartupError(f"function {esm.FunctionName} is not running (see function_not_started)")
        kind = source_kind(esm.EventSourceArn)
        source = await self._sources.build(esm, function, kind)
        runner = MappingRunner(esm, source, function_arn=function.arn, metrics=self._metrics, clock=self._clock,
                               from_api=from_api)
        self._records[runner.uuid] = RunningMapping(runner, kind)
        return runner

    def start(self, uuid: str) -> None:
        self._tasks.spawn(f"mapping:{uuid}", self._records[uuid].runner.run())

    def start_all(self) -> None:
        for uuid in self:
            self.start(uuid)

    async def replace(self, esm: EventSourceMapping, *, last_modified: float) -> None:
        assert esm.UUID is not None
        await self.remove(esm.UUID)
        runner = await self.add(esm, from_api=True)
        runner.last_modified = last_modified
        self.start(esm.UUID)

    async def remove(self, uuid: str) -> None:
        await self.stop([uuid])

    async def stop(self, uuids: list[str]) -> None:
        """Stop these mappings (their batches in flight finish, up to the drain timeout) and forget them."""
        for uuid in uuids:
            record = self._records.get(uuid)
            if record is not None:
                record.runner.stop()
        await self._tasks.wait([f"mapping:{u}" for u in uuids], self._drain_timeout())
        for uuid in uuids:
            self._records.pop(uuid, None)

    def stop_all(self) -> None:
        """Shutdown: every mapping stops taking work."""
        for record in self._records.values():
            record.runner.stop()

    def set_enabled(self, uuid: str, enabled: bool) -> None:
        record = self._records.get(uuid)
        if record is not None:
            record.runner.set_enabled(enabled)

    def file_changed_enabled(self, uuid: str, enabled: bool) -> None:
        """A config reload: the file's ``Enabled`` applies only where the file changed it."""
        self._records[uuid].runner.file_changed_enabled(enabled)

    def status(self, uuid: str) -> MappingStatus | None:
        record = self._records.get(uuid)
        if record is None:
            return None
        r = record.runner
        return MappingStatus(esm=r.esm.model_copy(), kind=record.kind, function_arn=r.function_arn,
                             from_api=r.from_api, file_enabled=r.file_enabled, state=r.state,
                             reason=r.state_transition_reason, last_modified=r.last_modified,
                             last_processing_result=r.source.last_processing_result)

    def described(self) -> Iterator[tuple[MappingStatus, dict[str, Any]]]:
        """Each mapping run here, with what its source shows of itself (the status)."""
        for uuid in self:
            status = self.status(uuid)
            if status is not None:
                yield status, self._records[uuid].runner.source.describe()

    async def probe(self) -> None:
        """One cheap call to the first mapping's source (readiness); BrokerError if unreachable."""
        for record in list(self._records.values())[:1]:
            await record.runner.source.probe()
