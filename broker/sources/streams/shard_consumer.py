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
The shard's state (the shard, its lanes and windows, the checkpoint tracker, stop and lease) is one
object, ``shard_state.ShardState``, that the reader, the lanes and the resolver share; the
checkpoint only moves past a record when it and everything before it are handled.

Each lane takes batches (``BatchSize``, ``MaximumBatchingWindowInSeconds``, 6 MB, never across two
tumbling windows) and hands them to ``batch_resolver``, which applies the stream rules of retries,
bisecting, partial responses, record age and the failure destination. With keys parked
(``IsolateFailingKeys``, or parked before and not yet drained) a ``ParkedRetries`` task tries them
again beside the lanes; a closed shard ends only once nothing of it is parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from typing import Any

import structlog

from broker.batching.envelope import Cut
from broker.clock import Clock
from broker.destinations.sender import DestinationSender
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantine
from broker.sources.streams.batch_resolver import BatchResolver, Stopped
from broker.sources.streams.checkpoints import SHARD_END, CheckpointStore
from broker.sources.streams.leases import Fence
from broker.sources.streams.parked_retries import ParkedRetries
from broker.sources.streams.parking import ParkedKeys
from broker.sources.streams.service import StreamService
from broker.sources.streams.shard_reader import ShardReader
from broker.sources.streams.shard_state import ShardState
from broker.sources.streams.types import Lane, PrefetchBudget, StreamMappingSpec, StreamSettings
from broker.sources.streams.windows import window_start
from broker.types import ShardInfo, StreamRecord

log = structlog.get_logger("broker.streams")


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
                 quarantine: Quarantine | None = None,
                 metrics: Metrics, clock: Clock, settings: StreamSettings, start: tuple[str, float | None],
                 checkpoint: str | None = None, fence: Fence | None = None,
                 on_result: Callable[[str], None] = lambda _: None, budget: PrefetchBudget | None = None,
                 parked: ParkedKeys | None = None) -> None:
        self.state = ConsumerState.INITIALIZING
        self._spec = spec
        self._clock = clock
        self._settings = settings
        self._start_position = start[0]
        self._shard = ShardState(shard, lanes=spec.parallelization, checkpoints=checkpoints, fence=fence,
                                 clock=clock, checkpoint=checkpoint)
        self._shard.on_stop(self._stopping)
        # Reads are large enough for two batches per lane and for 5 reads a second to keep up with a
        # busy shard (Kinesis serves up to 2 MB/s per shard to a reader).
        self._reader = ShardReader(
            self._shard, service=service, record_filter=spec.filter, start=start,
            read_size=max(spec.batch_size * spec.parallelization * 2, 2000), settings=settings, clock=clock,
            metrics=metrics, labels=(function.name, spec.uuid), budget=budget)
        self._resolver = BatchResolver(
            self._shard, service=service, spec=spec, function=function, sender=sender, quarantine=quarantine,
            metrics=metrics, clock=clock, settings=settings, on_result=on_result, parked=parked)
        self._parked = parked
        self._lanes_running = 0

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Stop reading and starting batches; batches being invoked finish, then a final checkpoint."""
        self._shard.stop()

    def _stopping(self) -> None:
        if self.state is ConsumerState.PROCESSING:
            self.state = ConsumerState.SHUTTING_DOWN

    def lose_lease(self) -> None:
        """The lease moved on: stop at once and never write a checkpoint again."""
        self._shard.lose_lease()

    @property
    def checkpointed(self) -> str | None:
        """The last checkpoint this consumer wrote (or started from)."""
        return self._shard.checkpointed

    @property
    def shard(self) -> ShardInfo:
        return self._shard.shard

    def describe(self) -> dict[str, Any]:
        """The shard as the status shows it (``Owner`` is added by the supervisor)."""
        activity = self._shard.activity
        out: dict[str, Any] = {"ShardId": self._shard.shard_id, "State": self.state.value,
                               "Checkpoint": self._shard.checkpointed, "InFlight": activity.in_flight,
                               "IteratorAgeMilliseconds": activity.iterator_age_ms}
        if activity.retrying_since is not None:
            out["RetryingSince"] = round(activity.retrying_since, 3)
            out["LastError"] = activity.last_error
        if self._parked is not None and self._parked.keys:
            out["ParkedKeys"] = len(self._parked.keys)
            out["ParkedRecords"] = self._parked.records
        return out

    def mark_closed(self, ending_sequence: str) -> None:
        """Discovery saw this shard close (resharding)."""
        self._shard.shard = ShardInfo(self.shard.shard_id, self.shard.parents, ending_sequence)

    async def run(self) -> ShutdownReason:
        """``checkpoint`` (given by the supervisor, which reads them all at once) is where to resume."""
        shard = self._shard
        structlog.contextvars.bind_contextvars(shard=shard.shard_id)
        if shard.checkpointed == SHARD_END:
            self.state = ConsumerState.SHARD_END
            return ShutdownReason.SHARD_END
        parked = self._parked
        if parked is not None:
            await parked.load()  # before reading: a record of a parked key read now waits behind it
        self.state = ConsumerState.PROCESSING
        log.info("shard_consumer_started", checkpoint=shard.checkpointed, start=self._start_position,
                 **({"parked_keys": len(parked.keys)} if parked is not None and parked.keys else {}))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reader.run())
                self._lanes_running = len(shard.lanes)
                for lane in shard.lanes:
                    group.create_task(self._work(lane))
                if parked is not None and (self._spec.isolate_failing_keys or parked.keys):
                    retries = ParkedRetries(parked, resolver=self._resolver, shard=shard,
                                            finished=lambda: self._lanes_running == 0)
                    group.create_task(retries.run())
        finally:
            self._reader.release_all()
            drained = parked is None or not parked.keys
            if parked is not None:
                parked.release()
        if not await shard.write_checkpoint():
            self.state = ConsumerState.SHUTDOWN
            return ShutdownReason.LEASE_LOST
        if self._reader.read_to_end and shard.tracker.pending == 0 and drained and not shard.stopped.is_set():
            if not await shard.end(SHARD_END):
                return ShutdownReason.LEASE_LOST
            self.state = ConsumerState.SHARD_END
            log.info("shard_ended", last=shard.checkpointed)
            return ShutdownReason.SHARD_END
        self.state = ConsumerState.SHUTDOWN
        log.info("shard_consumer_stopped", checkpoint=shard.checkpointed)
        return ShutdownReason.REQUESTED

    # ------------------------------------------------------------------ batching

    async def _work(self, lane: Lane) -> None:
        try:
            await self._batches(lane)
        finally:
            self._lanes_running -= 1
            if self._parked is not None:
                self._parked.changed.set()  # the parked retries end with the lanes, once drained

    async def _batches(self, lane: Lane) -> None:
        seconds = self._spec.tumbling_window_seconds
        while True:
            batch = await self._next_batch(lane)
            try:
                if batch is None:  # the reader finished: a shard read to its end closes the window
                    if lane.window and self._reader.read_to_end and not self._shard.stopped.is_set():
                        await self._resolver.close_window(lane)
                    return
                if seconds and (not batch or (lane.window and window_start(batch[0].arrival, seconds)
                                              != lane.window.start)):
                    await self._resolver.close_window(lane)  # the window's end passed, or a later window's records came
                if not batch:
                    continue
                if seconds and lane.window is None:
                    lane.open_window(window_start(batch[0].arrival, seconds), seconds)
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
        if self._shard.stopped.is_set():
            return None
        if self._spec.window_seconds > 0:
            deadline = self._clock.monotonic() + self._spec.window_seconds
            while len(lane.items) < self._spec.batch_size and not lane.closed and not self._shard.stopped.is_set():
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
                lane.changed.clear()
                try:
                    await asyncio.wait_for(lane.changed.wait(), remaining)
                except TimeoutError:
                    break
        seconds = self._spec.tumbling_window_seconds
        cut: Cut[StreamRecord] = Cut(self._spec.batch_size)
        cut.take(lane.items, same=(lambda a, b: window_start(a.arrival, seconds) == window_start(b.arrival, seconds))
                 if seconds else None)
        return cut.records

    async def _records_arrived(self, lane: Lane) -> bool | None:
        """Wait for records: True when some are there, None if the lane closed (or stop() came),
        False when the lane's open tumbling window is due to close first."""
        while not lane.items:
            if lane.closed or self._shard.stopped.is_set():
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
