"""One shard of one stream mapping, as an explicit state machine (KCL's ShardConsumer).

    INITIALIZING ──(checkpoint is SHARD_END)──────────────────────────────► SHARD_END
         │
         ▼
    PROCESSING ──(shard closed, read to its end, every record handled)──► SHARD_END
         │                                                                (checkpoint SHARD_END:
         │                                                                 the children may start)
         └──(stop(): pause, shutdown, rebalance)──► SHUTTING_DOWN ──► SHUTDOWN
                                                    (batches in hand finish; final checkpoint)

Inside PROCESSING a reader task (``shard_reader``) fetches pages (bounded prefetch: it stops
fetching while the buffer is full) and routes each record to one of ``ParallelizationFactor`` lanes
by a hash of its key, so one key's records stay in order while different keys run in parallel.
The checkpoint only moves past a record when it and everything before it are handled
(``CheckpointTracker``).

Each lane takes batches (``BatchSize``, ``MaximumBatchingWindowInSeconds``, 6 MB, never across two
tumbling windows) and hands them to ``batch_resolver``, which applies the stream rules of retries,
bisecting, partial responses, record age and the failure destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import Callable

import structlog

from broker.batching.checkpoint_tracker import CheckpointTracker
from broker.batching.envelope import ENVELOPE_BYTES, MAX_PAYLOAD_BYTES
from broker.clock import Clock
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.sources.streams.batch_resolver import BatchResolver, Stopped
from broker.sources.streams.checkpoints import SHARD_END, CheckpointStore
from broker.sources.streams.leases import Fence
from broker.sources.streams.service import StreamService
from broker.sources.streams.shard_reader import ShardReader
from broker.sources.streams.types import Lane, PrefetchBudget, StreamMappingSpec, StreamSettings
from broker.sources.streams.windows import Window, window_start
from broker.types import ShardInfo, StreamRecord

log = structlog.get_logger("broker.streams")


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


class ConsumerState(enum.Enum):
    INITIALIZING = "initializing"
    PROCESSING = "processing"
    SHUTTING_DOWN = "shutting_down"
    SHARD_END = "shard_end"
    SHUTDOWN = "shutdown"


class ShutdownReason(enum.IntEnum):
    """Ranked as in KCL: a higher reason overrides a lower one."""

    REQUESTED = 1  # final checkpoint of what is handled
    SHARD_END = 2  # checkpoint SHARD_END so children may start
    LEASE_LOST = 3  # never checkpoint


class ShardConsumer:
    def __init__(self, *, shard: ShardInfo, service: StreamService, spec: StreamMappingSpec,
                 function: Function, checkpoints: CheckpointStore, sender: DestinationSender,
                 metrics: Metrics, clock: Clock, settings: StreamSettings, start: tuple[str, float | None],
                 checkpoint: str | None = None, fence: Fence | None = None,
                 on_result: Callable[[str], None] = lambda _: None, budget: PrefetchBudget | None = None) -> None:
        self.state = ConsumerState.INITIALIZING
        self._spec = spec
        self._checkpoints = checkpoints
        self._clock = clock
        self._settings = settings
        self._start_position = start[0]
        self._stop = asyncio.Event()
        self._sleepers: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tracker = CheckpointTracker()
        self._checkpoint_lock = asyncio.Lock()
        self._fence = fence
        self._lease_lost = False
        self._lanes = [Lane() for _ in range(spec.parallelization)]
        self._checkpointed: str | None = checkpoint
        # Reads are large enough for two batches per lane and for 5 reads a second to keep up with a
        # busy shard (Kinesis serves up to 2 MB/s per shard to a reader).
        self._reader = ShardReader(
            shard=shard, service=service, lanes=self._lanes, tracker=self._tracker, record_filter=spec.filter,
            start=start, checkpoint=checkpoint, read_size=max(spec.batch_size * spec.parallelization * 2, 2000),
            settings=settings, clock=clock, sleep=self._sleep, stopped=self._stop,
            checkpoint_now=self._write_checkpoint, metrics=metrics, labels=(function.name, spec.uuid), budget=budget)
        self._resolver = BatchResolver(
            shard_id=shard.shard_id, service=service, spec=spec, function=function, sender=sender,
            metrics=metrics, clock=clock, settings=settings, sleep=self._sleep, stopped=self._stop,
            handled=self._done, on_result=on_result)

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Stop reading and starting batches; batches being invoked finish, then a final checkpoint."""
        if self.state is ConsumerState.PROCESSING:
            self.state = ConsumerState.SHUTTING_DOWN
        self._stop.set()
        for waker in self._sleepers:
            _wake(waker)
        self._reader.wake()
        for lane in self._lanes:
            lane.changed.set()

    def lose_lease(self) -> None:
        """The lease moved on: stop at once and never write a checkpoint again."""
        if not self._lease_lost:
            log.warning("lease_lost", shard=self.shard.shard_id)
        self._lease_lost = True
        self.stop()

    @property
    def checkpointed(self) -> str | None:
        """The last checkpoint this consumer wrote (or started from)."""
        return self._checkpointed

    @property
    def shard(self) -> ShardInfo:
        return self._reader.shard

    def mark_closed(self, ending_sequence: str) -> None:
        """Discovery saw this shard close (resharding)."""
        self._reader.shard = ShardInfo(self.shard.shard_id, self.shard.parents, ending_sequence)

    async def run(self) -> ShutdownReason:
        """``checkpoint`` (given by the supervisor, which reads them all at once) is where to resume."""
        structlog.contextvars.bind_contextvars(shard=self.shard.shard_id)
        self._loop = asyncio.get_running_loop()  # once: each call is a getpid() system call
        if self._checkpointed == SHARD_END:
            self.state = ConsumerState.SHARD_END
            return ShutdownReason.SHARD_END
        self.state = ConsumerState.PROCESSING
        log.info("shard_consumer_started", checkpoint=self._checkpointed, start=self._start_position)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reader.run())
                for lane in self._lanes:
                    group.create_task(self._work(lane))
        finally:
            self._reader.release_all()
        await self._write_checkpoint()
        if self._lease_lost:
            self.state = ConsumerState.SHUTDOWN
            return ShutdownReason.LEASE_LOST
        if self._reader.read_to_end and self._tracker.pending == 0 and not self._stop.is_set():
            if not await self._checkpoints.put(self.shard.shard_id, SHARD_END, self._fence):
                self.lose_lease()
                return ShutdownReason.LEASE_LOST
            self.state = ConsumerState.SHARD_END
            log.info("shard_ended", last=self._checkpointed)
            return ShutdownReason.SHARD_END
        self.state = ConsumerState.SHUTDOWN
        log.info("shard_consumer_stopped", checkpoint=self._checkpointed)
        return ShutdownReason.REQUESTED

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False if stop() arrived. One timer and one future, woken by stop():
        an idle shard pauses once a second, and two tasks under ``asyncio.wait`` cost several
        times the poll itself."""
        if self._stop.is_set():
            return False
        waker: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
        timer = self._clock.call_later(seconds, functools.partial(_wake, waker))
        self._sleepers.add(waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._sleepers.discard(waker)
        return not self._stop.is_set()

    # ------------------------------------------------------------------ batching

    async def _work(self, lane: Lane) -> None:
        seconds = self._spec.tumbling_window_seconds
        while True:
            batch = await self._next_batch(lane)
            try:
                if batch is None:  # the reader finished: a shard read to its end closes the window
                    if lane.window and self._reader.read_to_end and not self._stop.is_set():
                        await self._resolver.close_window(lane)
                    return
                if seconds and (not batch or (lane.window and window_start(batch[0].arrival, seconds)
                                              != lane.window.start)):
                    await self._resolver.close_window(lane)  # the window's end passed, or a later window's records came
                if not batch:
                    continue
                if seconds and lane.window is None:
                    lane.window = Window(window_start(batch[0].arrival, seconds), seconds)
                await self._resolver.resolve(batch, lane)
            except Stopped:
                return
            finally:
                if batch:
                    self._reader.handed_on(batch)

    async def _next_batch(self, lane: Lane) -> list[StreamRecord] | None:
        """The next batch; None once the lane is closed; [] when the open tumbling window is due to close."""
        arrived = await self._records_arrived(lane)
        if arrived is not True:
            return None if arrived is None else []
        if self._stop.is_set():
            return None
        if self._spec.window_seconds > 0:
            deadline = self._clock.monotonic() + self._spec.window_seconds
            while len(lane.items) < self._spec.batch_size and not lane.closed and not self._stop.is_set():
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
                lane.changed.clear()
                try:
                    await asyncio.wait_for(lane.changed.wait(), remaining)
                except TimeoutError:
                    break
        batch: list[StreamRecord] = []
        size = ENVELOPE_BYTES
        seconds = self._spec.tumbling_window_seconds
        while lane.items and len(batch) < self._spec.batch_size:
            nxt = lane.items[0]
            if batch and size + len(nxt.encoded) + 1 > MAX_PAYLOAD_BYTES:
                break
            if batch and seconds and window_start(nxt.arrival, seconds) != window_start(batch[0].arrival, seconds):
                break  # a batch never spans two tumbling windows
            batch.append(lane.items.popleft())
            size += len(nxt.encoded) + 1
        return batch

    async def _records_arrived(self, lane: Lane) -> bool | None:
        """Wait for records: True when some are there, None if the lane closed (or stop() came),
        False when the lane's open tumbling window is due to close first."""
        while not lane.items:
            if lane.closed or self._stop.is_set():
                return None
            lane.changed.clear()
            if lane.window is None:
                await lane.changed.wait()
                continue
            due = lane.window.end + self._settings.window_close_seconds - self._clock.time()
            if due <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.changed.wait(), due)
        return True

    # ------------------------------------------------------------------ checkpoints

    async def _done(self, records: list[StreamRecord], lane: Lane) -> None:
        """Records handled: checkpointable now, or (in a tumbling window) once the window closes."""
        if lane.window is not None:
            lane.window.held.extend(records)
            return
        for r in records:
            self._tracker.complete(r.seq)
        await self._write_checkpoint()

    async def _write_checkpoint(self) -> None:
        # One writer at a time, reading the mark inside the lock: the reader and the lanes both
        # write, and a slower write of an older mark must never land after a newer one.
        async with self._checkpoint_lock:
            mark = self._tracker.watermark
            if mark is None or self._lease_lost:
                return
            value = str(mark)
            if value == self._checkpointed:
                return
            try:
                written = await self._checkpoints.put(self.shard.shard_id, value, self._fence)
            except BrokerError as exc:  # kept in memory; the next write carries it
                log.warning("checkpoint_write_failed", sequence=value, error=str(exc))
                return
            if not written:  # fenced: another replica holds the shard now
                self.lose_lease()
                return
            self._checkpointed = value
