"""Keys parked after a failure (``IsolateFailingKeys``): a key's failing record and every later
record of that key in the shard wait here, durably in Redis, while the shard's other keys go on.
The checkpoint passes a parked record once it is stored; ``parked_retries`` tries each key again
from its oldest record. Order within a key holds across restarts and lease moves: a consumer loads
its shard's parked keys before it reads, and a record of a parked key read again (after a crash
between parking and the checkpoint) is not parked twice.

    {broker:esm:<uuid>}:parked:<shard>          hash  key -> attempts spent on its oldest record
    {broker:esm:<uuid>}:parked:<shard>:<key>    list  the key's records, oldest first:
                                                      JSON {"s": sequence, "a": arrival, "r": record}

Every write is a script fenced by the shard's lease (as a checkpoint is): a consumer that lost the
shard cannot remove a record its successor has loaded. A consumer always loads what is parked,
also with isolation turned off since, so what was parked is delivered before its key goes on.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field

from broker.clock import Clock
from broker.observability.metrics import Metrics
from broker.redis import keys
from broker.redis.client import RedisClient, text
from broker.redis.state import lua, translated
from broker.sources.streams.leases import Fence
from broker.types import InvokeResult, StreamRecord


@dataclass
class ParkedKey:
    records: collections.deque[StreamRecord] = field(default_factory=collections.deque)
    stored: int = 0  # of ``records``, how many (from the oldest) are in Redis: only those are tried
    attempts: int = 0  # spent on the oldest record
    due: float = 0.0  # monotonic time of its next try
    last: InvokeResult | None = None  # its oldest record's last failed answer (None after a restart)

    @property
    def newest(self) -> int:
        return self.records[-1].seq if self.records else -1


def _doc(record: StreamRecord) -> str:
    return json.dumps({"s": record.sequence, "a": record.arrival, "r": record.encoded.decode()}, separators=(",", ":"))


def _record(key: str, raw: bytes | str) -> StreamRecord:
    doc = json.loads(raw)
    return StreamRecord(doc["s"], key, float(doc["a"]), json.loads(doc["r"]), doc["r"].encode())


class ParkedKeys:
    """One shard's parked keys: in memory while its consumer runs, and in Redis."""

    def __init__(self, redis: RedisClient, *, mapping_uuid: str, shard_id: str, fence: Fence | None,
                 clock: Clock, metrics: Metrics, labels: tuple[str, str]) -> None:
        self._redis = redis
        self._uuid, self._shard = mapping_uuid, shard_id
        self._fence = fence
        self._clock = clock
        self._lease_keys = keys.leases(mapping_uuid)
        self._hash = keys.parked_keys(mapping_uuid, shard_id)
        self._write = redis.register_script(lua("broker.sources.streams", "parked.lua"))
        self._m_keys = metrics.parked_keys.labels(*labels)
        self._m_records = metrics.parked_records.labels(*labels)
        self.keys: dict[str, ParkedKey] = {}
        self.changed = asyncio.Event()  # a key parked or a record stored: the retries look again

    def holds(self, key: str) -> bool:
        return key in self.keys

    @property
    def records(self) -> int:
        return sum(len(k.records) for k in self.keys.values())

    @translated
    async def load(self) -> None:
        """What this shard has parked (before its consumer reads anything)."""
        for name, attempts in (await self._redis.hgetall(self._hash)).items():
            key = text(name)
            raw = await self._redis.lrange(keys.parked_records(self._uuid, self._shard, key), 0, -1)
            parked = ParkedKey(collections.deque(_record(key, r) for r in raw), attempts=int(attempts))
            parked.stored = len(parked.records)
            if parked.records:
                self.keys[key] = parked
                self._gauge(1, len(parked.records))
        self.changed.set()

    def take(self, records: list[StreamRecord], *, attempts: int, last: InvokeResult | None) -> list[StreamRecord]:
        """Park records of one key, in order, in memory first (the key is parked from now on);
        the ones new to it, to be stored with ``store``. ``attempts`` were spent on the first, if
        it starts the key's parking."""
        key = records[0].key
        parked = self.keys.get(key)
        if parked is None:
            parked = self.keys[key] = ParkedKey(attempts=attempts, last=last,
                                                due=self._clock.monotonic())
            self._gauge(1, 0)
        new = [r for r in records if r.seq > parked.newest]  # read again after a crash: parked once
        parked.records.extend(new)
        self._gauge(0, len(new))
        return new

    @translated
    async def store(self, records: list[StreamRecord]) -> bool:
        """Store records ``take`` returned; False if the lease was lost (nothing stored)."""
        if not records:
            return True
        key = records[0].key
        parked = self.keys[key]
        if not await self._written(key, "park", parked.attempts, *(_doc(r) for r in records)):
            return False
        parked.stored += len(records)
        self.changed.set()
        return True

    def next_due(self) -> tuple[str, float] | None:
        """The key to try next, and how long until it is due (<= 0: now)."""
        ready = [(p.due, k) for k, p in self.keys.items() if p.stored > 0]
        if not ready:
            return None
        due, key = min(ready)
        return key, due - self._clock.monotonic()

    @translated
    async def failed_again(self, key: str, attempts: int, last: InvokeResult | None, retry_in: float) -> bool:
        """The key's oldest record failed again; False if the lease was lost."""
        parked = self.keys[key]
        parked.attempts, parked.last = attempts, last
        parked.due = self._clock.monotonic() + retry_in
        return await self._written(key, "failed", attempts)

    @translated
    async def settle(self, key: str) -> bool:
        """The key's oldest record is done; the key goes on (or leaves, once empty). False if the
        lease was lost."""
        parked = self.keys[key]
        head = parked.records[0]
        if not await self._written(key, "settle", head.sequence):
            return False
        parked.records.popleft()
        parked.stored -= 1
        parked.attempts, parked.last, parked.due = 0, None, self._clock.monotonic()
        self._gauge(0, -1)
        if not parked.records:
            del self.keys[key]
            self._gauge(-1, 0)
        return True

    def release(self) -> None:
        """The consumer stops: what it counted leaves the gauges (the next holder counts it)."""
        self._gauge(-len(self.keys), -self.records)
        self.keys.clear()

    async def _written(self, key: str, op: str, *args: str | int) -> bool:
        """One fenced write (``scripts/parked.lua``); False if the lease was lost."""
        fence = self._fence
        who = [fence.owner, self._shard, str(fence.epoch)] if fence else ["", self._shard, ""]
        return bool(await self._write(keys=[*self._lease_keys, self._hash,
                                            keys.parked_records(self._uuid, self._shard, key)],
                                      args=[*who, key, op, *args]))

    def _gauge(self, keys_by: int, records_by: int) -> None:
        if keys_by:
            self._m_keys.inc(keys_by)
        if records_by:
            self._m_records.inc(records_by)
