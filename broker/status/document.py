"""The deployment's status as one document, merged at request time from every replica's view on
the status board and from what Redis holds itself: each stream shard's checkpoint and lease owner
(so a shard no live replica holds is there too), each function's permits in use and async queue,
each mapping's quarantine. Every mapping of the deployment is listed (the file's and the API's),
also one no replica runs right now.

    {"Replicas": [...], "Mappings": [...], "Functions": [...]}  (shapes in README, "Status")
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker.arns import source_kind
from broker.clock import Clock
from broker.config.models import FunctionConfig, TargetSpec
from broker.control.service import Known
from broker.errors import BrokerError
from broker.status.board import StatusBoard
from broker.types import SourceKind

ShardFacts = Callable[[str], Awaitable[tuple[dict[str, str], dict[str, str]]]]  # checkpoints, live owners
FunctionFacts = Callable[[str], Awaitable[dict[str, Any]]]  # ConcurrencyLimit, InUse, Waiting, AsyncQueue


def target_kind(target: TargetSpec) -> str:
    if target.Url:
        return "http"
    if target.Lambda:
        return "lambda"
    if target.Runtime:
        return "runtime"
    return "python" if target.InProcess else "handler"


class StatusDocument:
    def __init__(self, board: StatusBoard, *, clock: Clock, catalog: Callable[[], Awaitable[Mapping[str, Known]]],
                 functions: Callable[[], Mapping[str, FunctionConfig]], shards: ShardFacts,
                 function_facts: FunctionFacts, quarantined: Callable[[str, str], Awaitable[int]]) -> None:
        self._board = board
        self._clock = clock
        self._catalog = catalog
        self._functions = functions
        self._shards = shards
        self._function_facts = function_facts
        self._quarantined = quarantined

    async def build(self, *, history: bool = False) -> dict[str, Any]:
        """The document (BrokerError while Redis cannot be read); ``history``: each mapping's
        15 minutes of 10-second points (``[time, records/s, errors/s, worst iterator age ms]``)."""
        views = await self._board.views(self._clock.time())
        catalog = await self._catalog()
        mappings = [await self._mapping(uuid, known, views, history) for uuid, known in sorted(
            catalog.items(), key=lambda kv: (kv[1].esm.FunctionName, kv[0]))]
        functions = [await self._function(name, fn, views) for name, fn in sorted(self._functions().items())]
        return {"Replicas": [v["Replica"] for v in views], "Mappings": mappings, "Functions": functions}

    async def _mapping(self, uuid: str, known: Known, views: list[dict[str, Any]], history: bool) -> dict[str, Any]:
        esm = known.esm
        kind = source_kind(esm.EventSourceArn)
        runs = [(v["Replica"]["ReplicaId"], v["Mappings"][uuid]) for v in views if uuid in v["Mappings"]]
        results = [m["LastProcessingResult"] for _, m in runs if m["LastProcessingResult"] != "No records processed"]
        out: dict[str, Any] = {
            "UUID": uuid, "FunctionName": esm.FunctionName, "EventSourceArn": esm.EventSourceArn,
            "State": runs[0][1]["State"] if runs else ("Enabled" if esm.Enabled else "Disabled"),
            "Origin": "api" if known.from_api else "file", "RunningOn": [r for r, _ in runs],
            "LastProcessingResult": results[0] if results else "No records processed",
            "RecordsPerSecond": round(sum(m["RecordsPerSecond"] for _, m in runs), 2),
            "ErrorsPerSecond": round(sum(m["ErrorsPerSecond"] for _, m in runs), 2),
            "InFlightBatches": sum(m.get("InFlightBatches", 0) for _, m in runs),
        }
        if kind is SourceKind.SQS:
            out["Pollers"] = sum(m.get("Pollers", 0) for _, m in runs)
        else:
            with contextlib.suppress(BrokerError):  # the quarantine is its own store: shown when it answers
                out["Quarantined"] = await self._quarantined(uuid, esm.FunctionName)
            out["Shards"] = await self._merged_shards(uuid, runs)
        if history:
            out["History"] = _merged_history([m.get("History", []) for _, m in runs])
        return out

    async def _merged_shards(self, uuid: str, runs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Every shard Redis knows of the mapping (checkpoint or lease) or a replica holds: its
        owner and checkpoint as Redis has them, the rest as its owner reports it."""
        checkpoints, owners = await self._shards(uuid)
        reported = {s["ShardId"]: s for _, m in runs for s in m.get("Shards", ())
                    if owners.get(s["ShardId"], s["Owner"]) == s["Owner"]}
        out = []
        for shard in sorted(set(checkpoints) | set(owners) | set(reported)):
            row = dict(reported.get(shard) or {"ShardId": shard, "State": "unowned", "InFlight": 0,
                                                "IteratorAgeMilliseconds": None})
            row["Owner"] = owners.get(shard)
            row["Checkpoint"] = checkpoints.get(shard)
            if shard not in reported:  # nobody holds it, or its holder has not published yet
                row["State"] = ("shard_end" if row["Checkpoint"] == "SHARD_END"
                                else "unowned" if row["Owner"] is None else "starting")
            out.append(row)
        return out

    async def _function(self, name: str, fn: FunctionConfig, views: list[dict[str, Any]]) -> dict[str, Any]:
        environments: dict[str, int] = {}
        for view in views:
            for state, count in view["Functions"].get(name, {}).get("Environments", {}).items():
                environments[state] = environments.get(state, 0) + count
        out: dict[str, Any] = {"FunctionName": name, "Target": target_kind(fn.Target)}
        out.update(await self._function_facts(name))
        if fn.Target.Runtime or (fn.Target.Handler and not fn.Target.InProcess):
            out["Environments"] = {s: environments.get(s, 0) for s in ("initializing", "idle", "busy")}
        return out


def _merged_history(series: list[list[list[Any]]]) -> list[list[Any]]:
    """Replicas' points summed per bucket (rates add up; the iterator age is the worst)."""
    merged: dict[float, list[Any]] = {}
    for points in series:
        for at, records, errors, age in points:
            row = merged.setdefault(at, [at, 0.0, 0.0, None])
            row[1] = round(row[1] + records, 2)
            row[2] = round(row[2] + errors, 2)
            if age is not None:
                row[3] = max(row[3] or 0, age)
    return [merged[at] for at in sorted(merged)]
