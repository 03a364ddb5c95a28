"""Replaying the quarantine. An async event is queued again as a new attempt of the same request id
(it leaves the quarantine; failing again, it comes back with its attempts added up). A stream
record is invoked on the mapping's function in Lambda's event shape, under the function's
concurrency, in its original order per key: a record that succeeds leaves the quarantine; one that
fails again stays with ``Attempts`` + 1, and the later records of its key wait for the next replay."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

import structlog

from broker.batching.envelope import compact, records_event
from broker.errors import BrokerError
from broker.invoking.function import PERMIT_WAIT_SECONDS, Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantine, last_error

log = structlog.get_logger("broker.quarantine")


class _Queue(Protocol):
    """A function's async queue (``async_invoke.queue.AsyncQueue``), as replay uses it."""

    def replay(self, request_id: str, payload: str, earlier_attempts: int) -> Awaitable[None]: ...


class Replayer:
    def __init__(self, *, functions: Mapping[str, Function], queues: Mapping[str, _Queue],
                 spawn: Callable[[str, Coroutine[Any, Any, None]], None], metrics: Metrics) -> None:
        self._functions = functions  # the functions this replica runs
        self._queues = queues
        self._spawn = spawn  # a task of the serving broker (drained on shutdown)
        self._metrics = metrics

    async def events(self, name: str, quarantine: Quarantine, ids: list[str] | None) -> int:
        """Queue these async events (None: all) again; how many."""
        queue = self._queues.get(name)
        if queue is None:
            raise BrokerError(f"function {name} is not running on this replica (see function_not_started)")
        replayed = 0
        for doc in await quarantine.entries(ids):
            record = doc["Record"]
            await queue.replay(doc["Id"], record if isinstance(record, str) else json.dumps(record), doc["Attempts"])
            await quarantine.discard([doc["Id"]])
            self._metrics.quarantine_replays.labels(name, "", "queued").inc()
            replayed += 1
        return replayed

    async def records(self, mapping: str, function_name: str, quarantine: Quarantine, ids: list[str] | None) -> int:
        """Invoke these stream records (None: all) again, in the background; how many."""
        function = self._functions.get(function_name)
        if function is None:
            raise BrokerError(f"function {function_name} is not running on this replica (see function_not_started)")
        entries = await quarantine.entries(ids)
        keys: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for doc in sorted(entries, key=lambda d: (d.get("ShardId", ""), int(d.get("SequenceNumber") or 0))):
            keys.setdefault((doc.get("ShardId", ""), doc.get("PartitionKey", "")), []).append(doc)
        if keys:
            work = self._replay(mapping, function, quarantine, list(keys.values()))
            self._spawn(f"replay:{mapping}:{uuid.uuid4()}", work)
        return len(entries)

    async def _replay(self, mapping: str, function: Function, quarantine: Quarantine,
                      keys: list[list[dict[str, Any]]]) -> None:
        await asyncio.gather(*(self._key(mapping, function, quarantine, docs) for docs in keys))
        log.info("quarantine_replayed", mapping=mapping, keys=len(keys))

    async def _key(self, mapping: str, function: Function, quarantine: Quarantine, docs: list[dict[str, Any]]) -> None:
        m = self._metrics.quarantine_replays
        for doc in docs:
            payload = records_event([compact(doc["Record"]).encode()])
            try:
                result = await function.invoke(payload, request_id=str(uuid.uuid4()), wait_seconds=PERMIT_WAIT_SECONDS)
                error = None if result.ok else last_error(result.payload, result.function_error, result.target_status)
            except BrokerError as exc:  # throttled or unreachable: it stays, with what happened
                error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            m.labels(function.name, mapping, "failed" if error else "succeeded").inc()
            try:
                if error is None:
                    await quarantine.discard([doc["Id"]])
                    continue
                await quarantine.add([{**doc, "Attempts": doc["Attempts"] + 1, "LastError": error}])
            except BrokerError as exc:  # Redis away: the entry stays as it was, for the next replay
                log.warning("quarantine_replay_unrecorded", mapping=mapping, id=doc["Id"], error=str(exc))
            return  # a failure (or a record whose outcome is unrecorded): the key's later records wait
