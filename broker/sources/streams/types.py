"""The types a stream mapping's parts share: its settings, what a shard needs of its mapping, the
replica's prefetch budget, and a lane (records of some keys in order, and their open window)."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from broker.batching.filtering import RecordFilter
from broker.sources.streams.windows import Window
from broker.types import StreamRecord


@dataclass(frozen=True)
class StreamSettings:
    poll_interval_seconds: float = 1.0
    idle_poll_max_seconds: float = 0.0  # > poll interval: an idle shard's polls slow down to this
    min_read_interval_seconds: float = 0.2  # Kinesis allows 5 GetRecords per second per shard
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    window_close_seconds: float = 120.0  # a tumbling window with no later record closes this long after its end


@dataclass(frozen=True)
class StreamMappingSpec:
    """What a shard consumer needs of its mapping."""

    uuid: str
    batch_size: int
    window_seconds: float
    parallelization: int
    max_retry_attempts: int  # -1: forever
    max_record_age_seconds: int  # -1: forever
    bisect: bool
    report_batch_item_failures: bool
    destination: str | None
    starting_position: str
    starting_timestamp: float | None
    filter: RecordFilter | None
    tumbling_window_seconds: int = 0
    isolate_failing_keys: bool = False  # a failing record parks its key (``parking``), the shard goes on


class PrefetchBudget:
    """Bytes of records read ahead and not yet handled, across all shard consumers of a replica, so
    that many shards behind a slow function cannot hold more than ``limit`` between them. A shard
    with nothing buffered may always read, so every shard keeps moving."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0
        self._freed = asyncio.Event()

    def take(self, size: int) -> None:
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    async def freed(self) -> None:
        self._freed.clear()
        await self._freed.wait()


@dataclass
class Lane:
    """Records of some keys waiting for their batches, in order."""

    items: collections.deque[StreamRecord] = field(default_factory=collections.deque)
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    window: Window | None = None  # the open tumbling window (TumblingWindowInSeconds > 0)

    def put(self, record: StreamRecord) -> None:
        self.items.append(record)
        self.changed.set()

    def close(self) -> None:
        self.closed = True
        self.changed.set()

    def open_window(self, start: float, seconds: int) -> None:
        """A tumbling window opens (or, after one ended early, opens again with a fresh state)."""
        self.window = Window(start, seconds)

    def end_window(self) -> None:
        self.window = None
