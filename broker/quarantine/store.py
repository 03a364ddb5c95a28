"""The quarantine of one stream mapping or one function, in Redis (docs/design.md, "Redis layout"):
every record or event given up, with its payload, beside whatever Lambda's rules sent to the
on-failure destination or DLQ. Bounded by age (``quarantine_retention_seconds``) and count
(``quarantine_max_records``, the oldest leave first, counted). An entry's id is the record's own
(``<shard>:<sequence number>``, an async event's request id), so writing it again after a failed
write, or quarantining it again after a replay, keeps one entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.clock import Clock
from broker.observability.metrics import Metrics
from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.state import lua, translated


@dataclass(frozen=True)
class Bounds:
    retention_seconds: float
    max_records: int


def entry(*, id_: str, reason: str, attempts: int, quarantined_at: float, last_error: dict[str, Any] | None,
          record: Any, **stream: str) -> dict[str, Any]:
    """One quarantine entry as the API shows it; ``stream``: ShardId, SequenceNumber, PartitionKey."""
    return {"Id": id_, "Reason": reason, "Attempts": attempts, "QuarantinedAt": round(quarantined_at, 3),
            "LastError": last_error, "Record": record, **stream}


def last_error(payload: bytes | str | None, function_error: str | None, status: int | None) -> dict[str, Any] | None:
    """What the last invocation answered: ``errorType``/``errorMessage`` of a function error, or the
    target's HTTP status; None if it was never invoked."""
    if payload is None and status is None:
        return None
    out: dict[str, Any] = {}
    if function_error:
        try:
            body = json.loads(payload or b"{}")
        except ValueError:
            body = None
        if isinstance(body, dict):
            out = {k: body[k] for k in ("errorType", "errorMessage") if k in body}
        out.setdefault("errorType", function_error)
    if status is not None and status != 200:
        out["status"] = status
    return out or None


class Quarantine:
    def __init__(self, redis: RedisClient, scope: tuple[str, str], *, bounds: Bounds, clock: Clock,
                 kept: Callable[[int], None], evicted: Callable[[int], None]) -> None:
        self._redis = redis
        self._entries, self._order = scope
        self._bounds = bounds
        self._clock = clock
        self._kept = kept  # entries new to the quarantine, counted (one written again is not)
        self._evicted = evicted  # entries that left by the bounds, counted
        self._add = redis.register_script(lua("broker.quarantine", "add.lua"))

    @translated
    async def add(self, entries: list[dict[str, Any]]) -> None:
        """Keep these entries (durably, before the checkpoint passes their records), then the bounds."""
        args: list[Any] = [int(self._clock.time() * 1000), int(self._bounds.retention_seconds * 1000),
                           self._bounds.max_records]
        for doc in entries:
            args += [doc["Id"], json.dumps(doc, separators=(",", ":"))]
        added, gone = (int(n) for n in await self._add(keys=[self._entries, self._order], args=args))
        if added:
            self._kept(added)
        if gone:
            self._evicted(gone)

    @translated
    async def page(self, max_items: int, marker: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Entries oldest first, ``max_items`` after ``marker`` (an entry id); the next marker or None.
        The bounds apply first: an entry past its retention is never shown."""
        await self.add([])
        start = 0
        if marker:
            rank: Any = await self._redis.zrank(self._order, marker)
            start = 0 if rank is None else int(rank) + 1
        listed: list[bytes] = await self._redis.zrange(self._order, start, start + max_items)  # type: ignore[assignment]
        ids = [text(i) for i in listed]
        more = len(ids) > max_items
        ids = ids[:max_items]
        docs = await self._redis.hmget(self._entries, ids) if ids else []
        found = [json.loads(d) for d in docs if d is not None]
        return found, (ids[-1] if more and ids else None)

    @translated
    async def entries(self, ids: list[str] | None) -> list[dict[str, Any]]:
        """These entries (None: all), oldest first; ids not there are left out."""
        if ids is None:
            listed: list[bytes] = await self._redis.zrange(self._order, 0, -1)  # type: ignore[assignment]
            ids = [text(i) for i in listed]
        if not ids:
            return []
        docs = await self._redis.hmget(self._entries, ids)
        return [json.loads(d) for d in docs if d is not None]

    @translated
    async def missing(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` that are not in the quarantine."""
        if not ids:
            return []
        there = await self._redis.hmget(self._entries, ids)
        return [i for i, doc in zip(ids, there, strict=True) if doc is None]

    @translated
    async def discard(self, ids: list[str] | None) -> int:
        """Forget these entries (None: all); how many there were."""
        if ids is None:
            count = int(await self._redis.zcard(self._order))
            await self._redis.delete(self._entries, self._order)
            return count
        if not ids:
            return 0
        gone = int(await self._redis.hdel(self._entries, *ids))
        await self._redis.zrem(self._order, *ids)
        return gone

    @translated
    async def count(self) -> int:
        return int(await self._redis.zcard(self._order))


class Quarantines:
    """The quarantine of any mapping or function, on one Redis client and one set of bounds."""

    def __init__(self, redis: RedisClient, *, bounds: Callable[[], Bounds], clock: Clock, metrics: Metrics) -> None:
        self._redis = redis
        self._bounds = bounds
        self._clock = clock
        self._metrics = metrics

    def of_mapping(self, uuid: str, function: str) -> Quarantine:
        return self._of(keys.mapping_quarantine(uuid), function, uuid)

    def of_function(self, name: str) -> Quarantine:
        return self._of(keys.function_quarantine(name), name, "")

    def _of(self, scope: tuple[str, str], function: str, mapping: str) -> Quarantine:
        m = self._metrics
        return Quarantine(self._redis, scope, bounds=self._bounds(), clock=self._clock,
                          kept=m.quarantined.labels(function, mapping).inc,
                          evicted=m.quarantine_evicted.labels(function, mapping).inc)
