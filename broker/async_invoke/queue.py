"""The durable async event queue: one Redis Stream per function with a consumer group, plus a
delayed set for retries (docs/design.md, "Redis layout").

    {broker:fn:<name>}:events    stream; a new event's entry: ``id`` (request id) and ``p`` (the
                                 payload as accepted); an event back from a retry: ``e``, its
                                 whole document (JSON)
    {broker:fn:<name>}:delayed   zset of event documents scored by due time (Unix ms, Redis TIME)

``enqueue`` returns only after XADD did, so an accepted (202) event is in Redis; with AOF it
survives a Redis restart too (up to ``appendfsync everysec``). A worker that dies leaves its entries
pending in the group: they are claimed again (XAUTOCLAIM) once idle past the claim timeout, and a
restarted replica re-reads its own pending entries first. Consumers of replicas that are gone
are removed once nothing is pending for them, so the group does not grow as pods come and go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.pipeline import AutoPipeline, ScriptBatch
from broker.redis.state import create_group, lua, translated

GROUP = "workers"


@dataclass
class AsyncEvent:
    """One accepted event and what has happened to it so far."""

    request_id: str
    payload: str  # the original event JSON text
    enqueued_ms: int = 0  # Redis time of the first enqueue
    attempts: int = 0  # function errors so far
    invokes: int = 0  # times the function ran
    throttles: int = 0  # throttles and system errors so far (backoff exponent)
    last: dict[str, Any] | None = None  # last run: {"functionError", "payload", "status"}
    outcome: str | None = None  # set once decided: a condition whose delivery is still owed
    earlier_attempts: int = 0  # runs before it was quarantined and replayed (its quarantine entry's Attempts)
    trace: str = ""  # the X-Ray header of the request that queued it: every attempt is a span of that trace
    entry_id: str = field(default="", compare=False)
    # In this worker only, so a step retried after a Redis error is not done twice:
    delivered: bool = field(default=False, compare=False)  # the outcome reached its destinations
    scheduled: float | None = field(default=None, compare=False)  # a retry after this many seconds is owed

    def document(self) -> str:
        return json.dumps({"id": self.request_id, "payload": self.payload, "enqueued_ms": self.enqueued_ms,
                           "attempts": self.attempts, "invokes": self.invokes, "throttles": self.throttles,
                           "last": self.last, "outcome": self.outcome,
                           **({"earlier": self.earlier_attempts} if self.earlier_attempts else {}),
                           **({"trace": self.trace} if self.trace else {})})

    @classmethod
    def parse(cls, entry_id: str, doc: str | bytes) -> AsyncEvent:
        d = json.loads(doc)
        enqueued = d.get("enqueued_ms") or int(entry_id.split("-", maxsplit=1)[0])
        return cls(d["id"], d["payload"], enqueued, d.get("attempts", 0), d.get("invokes", 0),
                   d.get("throttles", 0), d.get("last"), d.get("outcome"), d.get("earlier", 0), d.get("trace", ""),
                   entry_id)


class AsyncQueue:
    """The queue of one function."""

    def __init__(self, redis: RedisClient, function: str, pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._pipeline = pipeline or AutoPipeline(redis)  # concurrent enqueues and finishes share round trips
        self.stream = keys.async_events(function)
        self.delayed = keys.async_delayed(function)
        self._schedule = redis.register_script(lua("broker.async_invoke", "schedule.lua"))
        self._promote = redis.register_script(lua("broker.async_invoke", "promote.lua"))
        self._finish = ScriptBatch(self._pipeline, redis.register_script(lua("broker.async_invoke", "finish.lua")))
        self._forget = redis.register_script(lua("broker.async_invoke", "forget_consumers.lua"))

    async def ensure_group(self) -> bool:
        """Create the consumer group (from the stream's start: nothing queued is skipped); True if it
        had to be created, False if it was there."""
        return await create_group(self._redis, self.stream, GROUP)

    @translated
    async def enqueue(self, request_id: str, payload: str, trace: str = "") -> str:
        """Durably accept an event (with the X-Ray header of the request's trace, if it had one);
        returns its stream entry id."""
        # The payload as its own field: no JSON document to build now nor to parse when it is read.
        extra = ("t", trace) if trace else ()
        entry = await self._pipeline.execute("XADD", self.stream, "*", "id", request_id, "p", payload, *extra)
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    @translated
    async def replay(self, request_id: str, payload: str, earlier_attempts: int) -> None:
        """A quarantined event queued again: a new attempt of the same request id, its age from now."""
        event = AsyncEvent(request_id, payload, earlier_attempts=earlier_attempts)
        await self._redis.xadd(self.stream, {"e": event.document()})

    @translated
    async def read(self, consumer: str, count: int, block_ms: int, *, pending: bool = False) -> list[AsyncEvent]:
        """New entries for ``consumer`` (or, with ``pending``, its own unacknowledged ones)."""
        reply: Any = await self._redis.xreadgroup(GROUP, consumer, {self.stream: "0" if pending else ">"},
                                             count=count, block=None if pending else block_ms)
        return [self._event(eid, fields) for _, entries in (reply or []) for eid, fields in entries if fields]

    @translated
    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[AsyncEvent]:
        """Entries a dead worker left pending for longer than ``min_idle_ms``."""
        reply = await self._redis.xautoclaim(self.stream, GROUP, consumer, min_idle_ms, "0-0", count=count)
        return [self._event(eid, fields) for eid, fields in reply[1] if fields]

    @translated
    async def retry_later(self, event: AsyncEvent, delay_seconds: float) -> None:
        await self._pipeline.script(self._schedule, [self.stream, self.delayed],
                                    [GROUP, event.entry_id, event.document(), int(delay_seconds * 1000)])

    @translated
    async def promote_due(self, limit: int = 100) -> int:
        return int(await self._promote(keys=[self.stream, self.delayed], args=[limit]))

    @translated
    async def finish(self, event: AsyncEvent) -> None:
        await self._finish([self.stream], [GROUP, event.entry_id])

    @translated
    async def forget_gone_consumers(self, consumer: str, idle_ms: int) -> list[str]:
        """Remove consumers (replicas that are gone) with nothing pending and no read for ``idle_ms``."""
        names = await self._forget(keys=[self.stream], args=[GROUP, consumer, idle_ms])
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    @translated
    async def depth(self) -> int:
        """Events waiting: in the stream (new or in flight) plus delayed retries."""
        return int(await self._redis.xlen(self.stream)) + int(await self._redis.zcard(self.delayed))

    @translated
    async def summary(self, now: float) -> dict[str, Any]:
        """The queue as the status shows it: events waiting to be read, being invoked (read, not
        finished), waiting for a retry, and the age of the oldest in the stream."""
        length = int(await self._redis.xlen(self.stream))
        pending = await self._redis.xpending(self.stream, GROUP) if length else {"pending": 0}
        delayed = int(await self._redis.zcard(self.delayed))
        oldest = await self._redis.xrange(self.stream, count=1) if length else []
        in_flight = int(pending["pending"])
        age = None
        if oldest:
            first = text(oldest[0][0] or "0-0")
            age = round(max(0.0, now - int(first.split("-")[0]) / 1000), 3)
        return {"Depth": max(0, length - in_flight), "InFlight": in_flight, "DelayedRetries": delayed,
                "OldestAgeSeconds": age}

    @staticmethod
    def _event(entry_id: Any, fields: dict[Any, Any]) -> AsyncEvent:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        doc = fields.get(b"e")
        if doc is not None:
            return AsyncEvent.parse(eid, doc)
        trace = fields.get(b"t")
        return AsyncEvent(fields[b"id"].decode(), fields[b"p"].decode(), int(eid.split("-", 1)[0]), entry_id=eid,
                          trace=trace.decode() if trace else "")
