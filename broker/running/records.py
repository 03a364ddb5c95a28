"""What this replica runs: one record per function and one per mapping, and read-only views of one
part of them for the components that need only that part (the API's invokables, the readiness
check's workers). Adding or removing a record is one step; no table can fall out of step with
another."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from broker.async_invoke.invoke_config import InvokeConfigStore
from broker.async_invoke.queue import AsyncQueue
from broker.async_invoke.worker import AsyncWorker
from broker.invoking.function import Function
from broker.sources.mapping import MappingRunner
from broker.types import SourceKind

R = TypeVar("R")
V = TypeVar("V")


@dataclass
class RunningFunction:
    function: Function
    queue: AsyncQueue
    invoke_config: InvokeConfigStore
    worker: AsyncWorker | None = None  # its async queue's worker, once started


@dataclass(frozen=True)
class RunningMapping:
    runner: MappingRunner
    kind: SourceKind


class View(Mapping[str, V], Generic[R, V]):
    """One part of each record, by name, as a read-only mapping that follows the records."""

    def __init__(self, records: Mapping[str, R], part: Callable[[R], V | None]) -> None:
        self._records = records
        self._part = part

    def __getitem__(self, key: str) -> V:
        value = self._part(self._records[key])
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key, record in list(self._records.items()) if self._part(record) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Running:
    """The records, created empty before anything that reads them, and their views."""

    def __init__(self) -> None:
        self.function_records: dict[str, RunningFunction] = {}
        self.mapping_records: dict[str, RunningMapping] = {}
        fns, maps = self.function_records, self.mapping_records
        self.functions: View[RunningFunction, Function] = View(fns, lambda r: r.function)
        self.queues: View[RunningFunction, AsyncQueue] = View(fns, lambda r: r.queue)
        self.workers: View[RunningFunction, AsyncWorker] = View(fns, lambda r: r.worker)
        self.runners: View[RunningMapping, MappingRunner] = View(maps, lambda r: r.runner)
        self.kinds: View[RunningMapping, SourceKind] = View(maps, lambda r: r.kind)
