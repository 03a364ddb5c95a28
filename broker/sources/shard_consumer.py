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
by a hash of its key, so one key's records stay in order while different keys run in parallel. The checkpoint only
moves past a record when it and everything before it are handled (``CheckpointTracker``).

A batch is resolved by the stream rules of spec §1.2-§1.3, §2.3-§2.6: throttles and unreachable
targets are retried with backoff without spending attempts; function errors spend one attempt
each (``MaximumRetryAttempts``, -1 = forever) or, with ``BisectBatchOnFunctionError``, split the
batch in two without spending any; a partial batch response resumes from the lowest reported
sequence number; records older than ``MaximumRecordAgeInSeconds`` are given up. What is given up
goes to the on-failure destination (retried until delivered, or the checkpoint waits) or, without
one, is dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from broker.batching.checkpoints import CheckpointTracker
from broker.batching.filtering import RecordFilter
from broker.batching.partial_failures import parse_item_failures
from broker.batching.policies import backoff_delay
from broker.clock import Clock
from broker.destinations.records import response_context, s3_failure_key, stream_failure_record
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError
from broker.invoking.base import PERMIT_WAIT_SECONDS, Function
from broker.observability.metrics import Metrics
from broker.sources.checkpoints import SHARD_END, CheckpointStore
from broker.sources.leases import Fence
from broker.sources.shard_reader import Lane, PrefetchBudget, ShardReader, StreamSettings
from broker.sources.streams import StreamService
from broker.sources.windows import Window, response_state, state_too_large, window_start
from broker.types import InvokeResult, ShardInfo, StreamRecord

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
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


@dataclass
class _Work:
    """A batch (or a part of one after bisecting or a partial response) being resolved."""

    records: list[StreamRecord]
    lane: Lane
    attempts: int = 0  # function errors spent
    invokes: int = 0  # invocations of exactly these records
    request_id: str = ""
    last: InvokeResult | None = None


class _Stopped(Exception):
    """Internal: stop() arrived while a batch was being resolved."""


class ShardConsumer:
    def __init__(self, *, shard: ShardInfo, service: StreamService, spec: StreamMappingSpec,
                 function: Function, checkpoints: CheckpointStore, sender: DestinationSender,
                 metrics: Metrics, clock: Clock, settings: StreamSettings, start: tuple[str, float | None],
                 checkpoint: str | None = None, fence: Fence | None = None,
                 on_result: Callable[[str], None] = lambda _: None, budget: PrefetchBudget | None = None) -> None:
        self.state = ConsumerState.INITIALIZING
        self._service = service
        self._spec = spec
        self._function = function
        self._checkpoints = checkpoints
        self._sender = sender
        self._clock = clock
        self._settings = settings
        self._start_position = start[0]
        self._on_result = on_result
        self._stop = asyncio.Event()
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
        labels = (function.name, spec.uuid)
        self._m_invoked = metrics.invoked_events.labels(*labels)
        self._m_failed = metrics.failed_invoke_events.labels(*labels)
        self._m_dropped = metrics.dropped_events.labels(*labels)
        self._m_delivered = metrics.on_failure_destination_delivered_events.labels(*labels)
        self._m_delivery_failures = metrics.destination_delivery_failures.labels(function.name)
        self._m_age = metrics.iterator_age.labels(*labels, shard.shard_id)

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Stop reading and starting batches; batches being invoked finish, then a final checkpoint."""
        if self.state is ConsumerState.PROCESSING:
            self.state = ConsumerState.SHUTTING_DOWN
        self._stop.set()
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
        """Sleep unless stopped; False if stop() arrived."""
        if self._stop.is_set():
            return False
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        stopper.cancel()
        return not self._stop.is_set()

    # ------------------------------------------------------------------ batching

    async def _work(self, lane: Lane) -> None:
        seconds = self._spec.tumbling_window_seconds
        while True:
            batch = await self._next_batch(lane)
            try:
                if batch is None:  # the reader finished: a shard read to its end closes the window
                    if lane.window and self._reader.read_to_end and not self._stop.is_set():
                        await self._close_window(lane)
                    return
                if seconds and (not batch or (lane.window and window_start(batch[0].arrival, seconds)
                                              != lane.window.start)):
                    await self._close_window(lane)  # the window's end passed, or a later window's records came
                if not batch:
                    continue
                if seconds and lane.window is None:
                    lane.window = Window(window_start(batch[0].arrival, seconds), seconds)
                await self._resolve(batch, lane)
            except _Stopped:
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
        size = len(b'{"Records":[]}')
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

    # ------------------------------------------------------------------ resolving a batch

    async def _resolve(self, batch: list[StreamRecord], lane: Lane) -> None:
        spec = self._spec
        work = collections.deque([_Work(batch, lane)])
        while work:
            w = work[0]
            if self._stop.is_set():
                raise _Stopped
            expired = self._expired_prefix(w.records)
            if expired:
                await self._give_up(expired, "RecordAgeExceeded", w, response=None)
                w.records = w.records[len(expired):]
                if not w.records:
                    work.popleft()
                continue
            result = await self._invoke(w)
            if result is None:  # records aged out while throttled: the age check above takes them
                continue
            if lane.window is not None and result.ok:
                result = await self._take_state(lane, result)
            failed = (parse_item_failures(result.payload, {r.sequence for r in w.records})
                      if result.ok and spec.report_batch_item_failures else frozenset())
            if result.ok and failed == frozenset():
                await self._done(w.records, lane)
                self._on_result("OK")
                work.popleft()
                continue
            self._m_failed.inc(len(w.records))
            self._on_result("PROBLEM: Function call failed")
            if result.ok and failed:  # a valid partial response: resume from the lowest reported
                lowest = min(failed, key=int)
                cut = next(i for i, r in enumerate(w.records) if r.sequence == lowest)
                await self._done(w.records[:cut], lane)
                w.records = w.records[cut:]
            elif spec.bisect and len(w.records) > 1:  # splitting spends no attempt
                mid = len(w.records) // 2
                work.popleft()
                work.appendleft(_Work(w.records[mid:], lane, attempts=w.attempts))
                work.appendleft(_Work(w.records[:mid], lane, attempts=w.attempts))
                log.info("batch_bisected", records=len(w.records), halves=(mid, len(w.records) - mid))
                continue
            w.attempts += 1
            if 0 <= spec.max_retry_attempts < w.attempts:
                error = result.function_error if not result.ok else None
                await self._give_up(w.records, "RetryAttemptsExhausted", w, response=response_context(error))
                work.popleft()
                continue
            if not await self._sleep(self._backoff(w.attempts - 1)):
                raise _Stopped

    def _expired_prefix(self, records: list[StreamRecord]) -> list[StreamRecord]:
        limit = self._spec.max_record_age_seconds
        if limit < 0:
            return []
        oldest_allowed = self._clock.time() - limit
        out = []
        for r in records:
            if r.arrival >= oldest_allowed:
                break
            out.append(r)
        return out

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_delay(attempt, base=self._settings.backoff_base_seconds,
                             cap=self._settings.backoff_max_seconds, retry_after=retry_after)

    async def _invoke(self, w: _Work) -> InvokeResult | None:
        """Invoke until the function runs; throttles and system errors spend no attempt. None when
        records aged past MaximumRecordAgeInSeconds meanwhile; _Stopped on stop()."""
        window = w.lane.window
        payload = (window.event(w.records, shard_id=self.shard.shard_id, source_arn=self._service.arn)
                   if window else b'{"Records":[' + b",".join(r.encoded for r in w.records) + b"]}")
        retry = 0
        while True:
            w.request_id = str(uuid.uuid4())
            self._m_age.set(max(0.0, self._clock.time() - w.records[-1].arrival))
            try:
                result = await self._function.invoke(payload, request_id=w.request_id, wait_seconds=PERMIT_WAIT_SECONDS)
            except BrokerError as exc:  # throttled, unreachable, or Redis away for the permit: no attempt spent
                if not exc.retryable:
                    raise
                if self._expired_prefix(w.records):
                    return None
                log.info("invoke_retry_scheduled", records=len(w.records), reason=type(exc).__name__)
                if not await self._sleep(self._backoff(retry, getattr(exc, "retry_after", None))):
                    raise _Stopped from exc
                retry += 1
                continue
            w.invokes += 1
            w.last = result
            self._m_invoked.inc(len(w.records))
            log.info("batch_invoked", records=len(w.records), first=w.records[0].sequence,
                     last=w.records[-1].sequence, attempt=w.attempts + 1,
                     duration_ms=round(result.duration_seconds * 1000, 2),
                     outcome="success" if result.ok else "function_error")
            return result

    async def _give_up(self, records: list[StreamRecord], condition: str, w: _Work,
                       response: dict[str, Any] | None) -> None:
        """The failure path: the destination record (retried until delivered) or a counted drop."""
        destination = self._spec.destination
        if not destination:
            self._m_dropped.inc(len(records))
            log.warning("records_dropped", condition=condition, records=len(records),
                        first=records[0].sequence, last=records[-1].sequence)
            await self._done(records, w.lane)
            return
        now = self._clock.time()
        document = stream_failure_record(
            kind=self._service.kind, request_id=w.request_id or str(uuid.uuid4()),
            function_arn=self._function.arn, condition=condition, invoke_count=w.invokes,
            response=response, timestamp=now, shard_id=self.shard.shard_id,
            first=(records[0].sequence, records[0].arrival), last=(records[-1].sequence, records[-1].arrival),
            batch_size=len(records), stream_arn=self._service.arn)
        s3_key = None
        if destination.startswith("arn:aws:s3:"):
            payload = b'{"Records":[' + b",".join(r.encoded for r in records) + b"]}"
            document = {**document, "payload": json.loads(payload)}
            s3_key = s3_failure_key(self._spec.uuid, self.shard.shard_id, now)
        attempt = 0
        while True:
            try:
                await self._sender.deliver(destination, document, s3_key=s3_key)
                break
            except BrokerError as exc:
                self._m_delivery_failures.inc()
                log.warning("destination_delivery_failed", destination=destination, error=str(exc))
                if not await self._sleep(self._backoff(attempt)):
                    raise _Stopped from exc
                attempt += 1
        self._m_delivered.inc(len(records))
        log.info("sent_to_destination", destination=destination, condition=condition, records=len(records),
                 first=records[0].sequence, last=records[-1].sequence)
        await self._done(records, w.lane)

    # ------------------------------------------------------------------ tumbling windows

    async def _take_state(self, lane: Lane, result: InvokeResult) -> InvokeResult:
        """Keep the response's state; a response without one is a failed invocation. A state
        above 1 MB ends the window early, and it goes on with a fresh state."""
        window = lane.window
        assert window is not None
        ok, state = response_state(result.payload)
        if not ok:
            log.warning("window_response_without_state", window_start=window.start)
            return InvokeResult(result.payload, "Unhandled", result.duration_seconds, result.target_status)
        window.state = state
        if state_too_large(state):
            window.terminated_early = True
            await self._close_window(lane)
            lane.window = Window(window.start, window.seconds)
        return result

    async def _close_window(self, lane: Lane) -> None:
        """The window's final invocation, retried until it succeeds (the shard waits, as Lambda's
        does); then the checkpoint passes the window's records and its state is dropped."""
        window = lane.window
        if window is None:
            return
        payload = window.event([], shard_id=self.shard.shard_id, source_arn=self._service.arn, final=True)
        retry = 0
        while True:
            try:
                result = await self._function.invoke(payload, wait_seconds=PERMIT_WAIT_SECONDS)
                if result.ok:
                    break
                log.warning("window_final_invoke_failed", window_start=window.start, error=result.function_error)
                retry_after = None
            except BrokerError as exc:
                if not exc.retryable:
                    raise
                retry_after = getattr(exc, "retry_after", None)
            if not await self._sleep(self._backoff(retry, retry_after)):
                raise _Stopped
            retry += 1
        lane.window = None
        log.info("window_closed", window_start=window.start, records=len(window.held),
                 terminated_early=window.terminated_early)
        for r in window.held:
            self._tracker.complete(r.seq)
        await self._write_checkpoint()

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
