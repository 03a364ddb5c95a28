"""Reading one shard into its lanes, with a bounded prefetch (aiokafka's fetcher, KCL's
PrefetchRecordsPublisher): pages are fetched while the buffer has room for a whole read, each
record goes to one of ``ParallelizationFactor`` lanes by a hash of its key (one key's records stay
in order), filtered-out records pass the checkpoint at once. An iterator is (re-)opened after the
last record read, never re-delivering buffered records; an idle shard is polled every poll
interval (or slower, doubling up to ``idle_poll_max_seconds``), a replica's idle shards in groups
(``_idle_pause``). The reader ends at the end of a closed shard, or at ``stop``.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

import structlog

from broker.batching.filtering import RecordFilter
from broker.clock import Clock
from broker.errors import BrokerError
from broker.observability.metrics import Metrics
from broker.retrying import Stopped, backoff_delay, retrying
from broker.sources.streams.service import StreamService
from broker.sources.streams.shard_state import ShardState
from broker.sources.streams.types import PrefetchBudget, StreamSettings
from broker.types import SourceKind, StreamRecord

# Prefetch bound in bytes per shard: large records (up to 1 MB each in Kinesis) must not let two
# reads of 2,000 records hold gigabytes. A read still happens whenever the buffer is below it.
PREFETCH_MAX_BYTES = 8 * 1024 * 1024
IDLE_GRID_SECONDS = 0.05
log = structlog.get_logger("broker.streams")


def idle_pause(settings: StreamSettings, empty_reads: int) -> float:
    """Lambda polls an idle shard every poll interval; with ``idle_poll_max_seconds`` set the pause
    doubles per empty read up to that cap (cheaper for many idle shards, slower to notice the first
    record after a quiet spell)."""
    base = settings.poll_interval_seconds
    cap = max(base, settings.idle_poll_max_seconds)
    return float(min(cap, base * 2.0 ** min(max(0, empty_reads - 1), 30)))


class ShardReader:
    def __init__(self, state: ShardState, *, service: StreamService, record_filter: RecordFilter | None,
                 start: tuple[str, float | None], read_size: int, settings: StreamSettings, clock: Clock,
                 metrics: Metrics, labels: tuple[str, str], budget: PrefetchBudget | None) -> None:
        self._state = state
        self._service = service
        self._lanes = state.lanes
        self._tracker = state.tracker
        self._filter = record_filter
        self._start = start
        self._settings = settings
        self._clock = clock
        self._sleep = state.sleep  # False once stop() came
        self._stopped = state.stopped
        self._budget = budget  # shared by every shard of the replica
        # The prefetch bound is two reads, and the reader waits for room for a whole one: a bound of
        # one read made each read only as large as what the lanes had drained since the last
        # (~1,000 records at 5 reads/s on kinesalite, lanes idle 87% of the time waiting for records).
        self._read_size = read_size
        self._buffer_limit = 2 * read_size
        self._buffered = 0
        self._buffered_bytes = 0
        self._space = asyncio.Event()
        state.on_stop(self._space.set)  # a reader waiting for room looks again (and ends)
        self._last_read = state.checkpointed
        self._opened_at: float | None = None
        self.read_to_end = False  # a closed shard was read to its last record
        self._last_call = -1e18
        self._empty_reads = 0
        self._first_pause = True
        self._m_polled = metrics.polled_events.labels(*labels)
        self._m_reads = metrics.stream_reads.labels(*labels)
        self._m_filtered = metrics.filtered_out_events.labels(*labels)

    def handed_on(self, batch: list[StreamRecord]) -> None:
        """A lane is done with ``batch``: its room in the buffer (and the replica's budget) is free."""
        size = sum(len(r.encoded) for r in batch)
        self._buffered -= len(batch)
        self._buffered_bytes -= size
        if self._budget is not None:
            self._budget.give(size)
        self._space.set()

    def release_all(self) -> None:
        """Records left unhandled at a stop are dropped: their bytes go back to the budget."""
        if self._budget is not None:
            self._budget.give(self._buffered_bytes)
        self._buffered_bytes = 0

    async def run(self) -> None:
        try:
            iterator = await self._reopen()
            while iterator is not None and not self._stopped.is_set():
                iterator = await self._poll(iterator)
        finally:
            for lane in self._lanes:
                lane.close()

    async def _poll(self, iterator: str) -> str | None:
        """One GetRecords (once there is room for its records): the next iterator, or None when
        the shard was read to its end or stop() came."""
        while self._buffer_full() and not self._stopped.is_set():
            await self._wait_for_room()
        pause = self._last_call + self._settings.min_read_interval_seconds - self._clock.monotonic()
        if pause > 0 and not await self._sleep(pause):
            return None
        self._last_call = self._clock.monotonic()
        self._m_reads.inc()
        try:
            result = await self._service.read(self._state.shard_id, iterator, self._read_size)
        except BrokerError as exc:
            # Expired or invalid iterators (the emulator answers 500) are re-opened from the last
            # record read; throttles back off.
            log.warning("get_records_failed", error=str(exc))
            if not await self._sleep(self._settings.poll_interval_seconds):
                return None
            return await self._reopen()
        if result.records:
            for record in result.records:
                self._dispatch(record)
            await self._state.write_checkpoint()  # filtered-out records pass the checkpoint too
        self._empty_reads = 0 if result.records else self._empty_reads + 1
        if not result.records and self._buffered == 0 and self._state.activity.in_flight == 0:
            self._state.activity.iterator_age_ms = 0  # caught up: nothing behind the last record handled
        if result.next_iterator is None or self._at_end(self._empty_reads):
            self.read_to_end = True
            return None
        if not result.records and not await self._sleep(self._idle_pause()):
            return None
        return str(result.next_iterator)

    def _idle_pause(self) -> float:
        """The pause after an empty read, counted from the read's start (so an idle shard is read
        once a poll interval, not once an interval plus the read's latency). The first pause is
        drawn within the interval, spreading a replica's idle shards over it; every pause ends on
        a grid of ``IDLE_GRID_SECONDS``, so a replica's shards wake in groups: one pass of the event
        loop sends a group's requests and the answers come back together (with 1,000 idle shards,
        about a fifth less CPU than each shard waking on its own)."""
        pause = idle_pause(self._settings, self._empty_reads)
        if self._first_pause:
            pause, self._first_pause = pause * random.random(), False
        due = self._last_call + pause
        if pause >= 4 * IDLE_GRID_SECONDS:  # shorter pauses (tests' fast polls) would round to nothing
            due = round(due / IDLE_GRID_SECONDS) * IDLE_GRID_SECONDS
        return due - self._clock.monotonic()

    async def _open_iterator(self) -> str:
        """From the last record read (never re-delivering buffered ones), else the checkpoint,
        else the start position; a re-opened LATEST iterator resumes at the time it first opened."""
        svc, shard = self._service, self._state.shard_id
        if self._last_read is not None:
            return await svc.iterator(shard, "AFTER_SEQUENCE_NUMBER", sequence=self._last_read)
        position, timestamp = self._start
        if self._opened_at is not None and position == "LATEST" and svc.kind is SourceKind.KINESIS:
            return await svc.iterator(shard, "AT_TIMESTAMP", timestamp=self._opened_at)
        self._opened_at = self._opened_at or self._clock.time()
        return await svc.iterator(shard, position, timestamp=timestamp)

    async def _reopen(self) -> str | None:
        """An iterator from where reading stands, retried with backoff while AWS is unreachable
        or throttling; None if stop() came first."""
        try:
            return await retrying(
                self._open_iterator, pause=self._sleep,
                retryable=lambda e: isinstance(e, BrokerError) and e.retryable,
                delay=lambda n, _: backoff_delay(n, base=self._settings.backoff_base_seconds,
                                                 cap=self._settings.backoff_max_seconds),
                before_wait=lambda e, _n, _s: log.warning("get_shard_iterator_failed", error=str(e)))
        except Stopped:
            return None

    def _buffer_full(self) -> bool:
        """No room for a whole read, the records held already take PREFETCH_MAX_BYTES, or the
        replica's prefetch budget is spent (unless this shard holds nothing)."""
        return (self._buffered > self._buffer_limit - self._read_size or self._buffered_bytes >= PREFETCH_MAX_BYTES
                or (self._budget is not None and self._budget.exhausted and self._buffered > 0))

    async def _wait_for_room(self) -> None:
        """Until this shard's lanes or (with a budget) any shard's lanes hand records on, or stop()."""
        self._space.clear()
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._space.wait())]
        if self._budget is not None:
            waits.append(asyncio.ensure_future(self._budget.freed()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _at_end(self, empty_reads: int) -> bool:
        """A closed shard read to its end. Services that never return a null iterator (the AWS
        emulator) are caught by the shard's ending sequence number from the listing."""
        ending = self._state.shard.ending_sequence
        if ending is None or empty_reads == 0:
            return False
        return (self._last_read is not None and int(self._last_read) >= int(ending)) or empty_reads >= 3

    def _dispatch(self, record: StreamRecord) -> None:
        self._last_read = record.sequence
        self._m_polled.inc()
        self._tracker.add(record.seq)
        flt = self._filter
        if flt is not None and not flt.matches(record.record, *self._service.filter_view(record)):
            self._m_filtered.inc()
            self._tracker.complete(record.seq)
            return
        lane = self._lanes[zlib.crc32(record.key.encode()) % len(self._lanes)]
        self._buffered += 1
        self._buffered_bytes += len(record.encoded)
        if self._budget is not None:
            self._budget.take(len(record.encoded))
        lane.put(record)
