"""SQS event source mappings (docs/aws-semantics.md: "Mapping parameters", "Partial batch
responses", "Event filtering", "Payload size and batch cutting", "SQS polling and deletion",
"Event shapes").

Pollers
    Each poller loops: collect a batch (long polls of up to 10 messages until BatchSize, the
    batching window or 6 MiB), filter, invoke, delete. A mapping starts ``sqs_initial_pollers``
    (5, like Lambda), adds one while batches come back full (at most ``sqs_scale_up_per_minute``),
    and retires one after an empty long poll or a function error (without
    ReportBatchItemFailures), down to ``sqs_min_pollers`` (2) - or never below the initial count
    when ``ScalingConfig.MaximumConcurrency`` is set, as Lambda does. Never above
    MaximumConcurrency.

Failures
    A function error deletes nothing: the messages come back after the visibility timeout and the
    queue's redrive policy moves them to its DLQ after maxReceiveCount. A throttle or an
    unreachable target is retried with backoff while the batch can still finish before its
    visibility timeout runs out; then the batch is given up to the queue the same way.

FIFO
    SQS itself never hands out a message group that has messages in flight, so a group's batches
    never overlap. When items fail, every later message of the same group in the batch is kept
    too, so a group's order survives even if the function reports only the first failure.

Shutdown and pause
    ``stop()`` lets long polls finish (cancelling one client-side would leave whatever SQS hands
    to it invisible until its visibility timeout), makes what they return visible again at once
    (ChangeMessageVisibility 0), and lets batches being invoked finish (the app bounds this by
    ``drain_timeout_seconds``, which should exceed ``sqs_wait_time_seconds``).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import math
import random
from dataclasses import dataclass
from typing import Any

import structlog

from broker.batching.envelope import Cut, compact, records_event
from broker.batching.filtering import RecordFilter, decode_json_object
from broker.batching.partial_failures import parse_item_failures
from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.errors import BrokerError, InvokeError, TargetThrottled
from broker.invoking.function import PERMIT_WAIT_SECONDS, Function
from broker.observability.metrics import Metrics
from broker.retrying import Stopped, backoff_delay, retrying
from broker.sources.sqs.queue import MAX_RECEIVE, SqsQueue
from broker.sources.sqs.records import sqs_record
from broker.tracing.context import TraceContext
from broker.tracing.spans import tracing
from broker.types import InvokeResult, SqsMessage

_CONTENDED_WAIT_SECONDS = 1  # idle long poll while others wait for the permit it holds
log = structlog.get_logger("broker.sqs")


@dataclass(frozen=True)
class SqsSettings:
    wait_time_seconds: int = 20
    initial_pollers: int = 5
    min_pollers: int = 2
    max_pollers: int = 1250
    scale_up_per_minute: int = 300
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0


class _Round(enum.Enum):
    DONE = "done"  # a batch was handled
    EMPTY = "empty"  # the idle long poll came back empty
    BACK_OFF = "back_off"  # a function error (without ReportBatchItemFailures): one poller fewer
    STOPPED = "stopped"  # stop() came while receiving: what was received goes back


class SqsMapping:
    """All pollers of one SQS mapping."""

    def __init__(self, *, esm: EventSourceMapping, function: Function, sqs: Any, queue_url: str,
                 visibility_timeout: int, region: str, settings: SqsSettings, metrics: Metrics,
                 clock: Clock) -> None:
        assert esm.UUID is not None
        assert esm.BatchSize is not None
        self.esm = esm
        self.last_processing_result = "No records processed"  # Lambda shows it on stream mappings only
        self._function = function
        self._queue_arn = esm.EventSourceArn
        self._queue_name = esm.EventSourceArn.rsplit(":", 1)[-1]
        self._visibility = visibility_timeout
        self._region = region
        self._settings = settings
        self._clock = clock
        self._fifo = esm.EventSourceArn.endswith(".fifo")
        self._batch_size = esm.BatchSize
        self._window = float(esm.MaximumBatchingWindowInSeconds or 0)
        self._rbif = esm.report_batch_item_failures
        patterns = [f.Pattern for f in esm.FilterCriteria.Filters] if esm.FilterCriteria else []
        self._filter = RecordFilter.compile(patterns, "body")
        cap = esm.ScalingConfig.MaximumConcurrency if esm.ScalingConfig else None
        self._max = min(cap or settings.max_pollers, settings.max_pollers)
        self._initial = min(settings.initial_pollers, self._max)
        self._floor = self._initial if cap else min(settings.min_pollers, self._initial)
        self._pollers = 0
        self._in_flight = 0  # batches being invoked
        self._last_growth = -math.inf
        self._in_line = False  # a poller of this mapping is waiting in line for a permit
        self._stop = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        labels = (function.name, esm.UUID)
        self._m_polled = metrics.polled_events.labels(*labels)
        self._m_filtered = metrics.filtered_out_events.labels(*labels)
        self._m_invoked = metrics.invoked_events.labels(*labels)
        self._m_failed = metrics.failed_invoke_events.labels(*labels)
        self._queue = SqsQueue(sqs, queue_url, clock=clock, deleted=metrics.deleted_events.labels(*labels),
                               returned=metrics.returned_events.labels(*labels))
        self._m_pollers = metrics.pollers.labels(*labels)

    @property
    def pollers(self) -> int:
        return self._pollers

    def describe(self) -> dict[str, Any]:
        """What the status shows of this replica's part: pollers and batches being invoked."""
        return {"Pollers": self._pollers, "InFlightBatches": self._in_flight}

    async def run(self) -> None:
        """Poll until ``stop()``; returns when every poller has finished its batch. Restartable."""
        self._stop = asyncio.Event()
        structlog.contextvars.bind_contextvars(mapping=self.esm.UUID, function=self._function.name)
        async with asyncio.TaskGroup() as group:
            self._group = group
            for _ in range(self._initial):
                self._spawn()
        self._group = None

    def stop(self) -> None:
        """Stop receiving: what arrives from now on goes back to the queue, batches being invoked finish."""
        self._stop.set()

    async def probe(self) -> None:
        await self._queue.probe()

    # ------------------------------------------------------------------ scaling

    def _spawn(self) -> None:
        assert self._group is not None
        self._pollers += 1
        self._m_pollers.set(self._pollers)
        self._group.create_task(self._poll())

    def _grow(self) -> None:
        now = self._clock.monotonic()
        if (self._pollers < self._max and not self._stop.is_set()
                and now - self._last_growth >= 60.0 / self._settings.scale_up_per_minute):
            self._last_growth = now
            self._spawn()

    def _retire(self) -> bool:
        """Let the calling poller exit if the mapping is above its floor."""
        if self._pollers > self._floor:
            self._pollers -= 1
            self._m_pollers.set(self._pollers)
            return True
        return False

    # ------------------------------------------------------------------ poller loop

    async def _poll(self) -> None:
        carry: list[SqsMessage] = []
        idle = False
        retired = False

        async def pause(seconds: float) -> bool:
            """Wait out a failure; a poller above the mapping's floor retires instead (False)."""
            nonlocal retired
            retired = self._retire()
            if not retired:
                await self._clock.sleep(seconds)
            return not retired and not self._stop.is_set()

        try:
            while not self._stop.is_set():
                if idle:  # let waiting consumers of the same pool take the permit between idle polls
                    await self._clock.sleep(random.uniform(0.05, 0.25))
                    idle = False
                try:  # Redis or SQS away, or no permit free: back off, never die
                    outcome, carry = await retrying(
                        functools.partial(self._round, carry), pause=pause,
                        retryable=lambda e: isinstance(e, BrokerError) and e.retryable, delay=self._failure_delay)
                except Stopped:
                    if retired:
                        return
                    break
                if outcome is _Round.STOPPED:
                    break
                if outcome is _Round.EMPTY:
                    if self._retire():
                        return
                    idle = True
                elif outcome is _Round.BACK_OFF and self._retire():
                    return
        finally:
            if carry:
                await asyncio.shield(self._queue.make_visible(carry))
        self._pollers -= 1
        self._m_pollers.set(max(self._pollers, 0))

    def _failure_delay(self, failures: int, exc: BaseException) -> float:
        """The pause after ``failures`` permit refusals or failed receives in a row."""
        settings = self._settings
        if isinstance(exc, TargetThrottled):  # asked for again soon: the pool frees up as batches end
            log.info("poller_throttled", reason=exc.reason)
            return backoff_delay(failures, base=settings.backoff_base_seconds, cap=min(settings.backoff_max_seconds, 5))
        log.warning("poll_failed", error=str(exc))
        return backoff_delay(failures, base=settings.backoff_base_seconds, cap=settings.backoff_max_seconds)

    async def _round(self, carry: list[SqsMessage]) -> tuple[_Round, list[SqsMessage]]:
        """One batch under one permit, held before ReceiveMessage: a throttled function never spends
        receive counts (nor sends healthy messages towards the DLQ). One poller of the mapping waits
        in line for the permit when the pool is busy; the others take only a permit nobody waits for."""
        wait = 0.0 if self._in_line else PERMIT_WAIT_SECONDS
        self._in_line = self._in_line or wait > 0
        try:
            async with self._function.permit(wait) as grant:
                if wait:
                    self._in_line = wait = False
                batch, carry = await self._collect(carry, contended=grant.contended)
                if batch is not None and self._stop.is_set():
                    return _Round.STOPPED, batch + carry
                if batch is None:
                    return _Round.EMPTY, []
                if len(batch) + len(carry) >= self._batch_size:
                    self._grow()
                return (_Round.BACK_OFF if await self._process(batch) else _Round.DONE), carry
        finally:
            if wait:
                self._in_line = False

    def _wrap(self, message: dict[str, Any], received_at: float) -> SqsMessage:
        record = sqs_record(message, queue_arn=self._queue_arn, region=self._region)
        group = message.get("Attributes", {}).get("MessageGroupId")
        return SqsMessage(message["MessageId"], message["ReceiptHandle"], group, record,
                          compact(record).encode(), received_at)

    async def _collect(self, carry: list[SqsMessage], *, contended: bool = False,
                       ) -> tuple[list[SqsMessage] | None, list[SqsMessage]]:
        """Gather one batch and what did not fit in it; (None, []) after an empty idle long poll.

        The window opens when the first message is in hand (an idle long poll does not count).
        While others wait for the permit held (``contended``) the idle long poll is short."""
        cut: Cut[SqsMessage] = Cut(self._batch_size)
        messages = cut.records
        pending = collections.deque(carry)
        deadline: float | None = None
        deep = False  # the last receive came back full: the queue has more
        while True:
            cut.take(pending)
            if pending or cut.full:
                return messages, list(pending)
            want = cut.room
            if not messages:
                wait = self._settings.wait_time_seconds
                raw = await self._queue.receive(min(MAX_RECEIVE, want),
                                          min(wait, _CONTENDED_WAIT_SECONDS) if contended else wait)
                if not raw:
                    return None, []
                deep = len(raw) == MAX_RECEIVE
            else:
                if deadline is None:
                    deadline = messages[0].received_at + self._window
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return messages, list(pending)
                try:
                    raw = await self._queue.receive_many(want if deep else min(MAX_RECEIVE, want),
                                                   min(20, math.ceil(remaining)))
                except BrokerError as exc:  # what is in hand is invoked now, not left invisible
                    log.warning("poll_failed", error=str(exc))
                    return messages, list(pending)
                deep = len(raw) >= MAX_RECEIVE
            self._m_polled.inc(len(raw))
            now = self._clock.monotonic()
            pending.extend(self._wrap(m, now) for m in raw)

    # ------------------------------------------------------------------ processing

    async def _process(self, batch: list[SqsMessage]) -> bool:
        """Filter, invoke, delete. True if the poller should back off (function error)."""
        received_at = min(m.received_at for m in batch)
        messages = batch
        if self._filter is not None:
            messages = await self._apply_filter(messages)
            if not messages:
                return False
        # Lambda's rule: the invocation carries the first record's AWSTraceHeader (the span links to all)
        traces = [TraceContext.from_xray(m.record["attributes"].get("AWSTraceHeader"))
                  for m in (messages if tracing.on else messages[:1])]
        self._in_flight += 1
        try:
            with tracing.span(f"{self._queue_name} process", parent=traces[0], kind="consumer",
                              links=[t for t in traces if t], now=self._clock.time(), messaging__system="aws_sqs",
                              messaging__destination__name=self._queue_name, messaging__operation="process",
                              messaging__batch__message_count=len(messages)) as span:
                return await self._settle(messages, received_at, span.context)
        finally:
            self._in_flight -= 1

    async def _settle(self, messages: list[SqsMessage], received_at: float, trace: TraceContext) -> bool:
        """Invoke and delete what succeeded. True if the poller should back off (function error)."""
        result = await self._invoke(records_event(m.encoded for m in messages), received_at, len(messages), trace)
        if result is None:
            return True
        self._m_invoked.inc(len(messages))
        if not result.ok:
            self._m_failed.inc(len(messages))
            self._log_batch(messages, result, "function_error")
            return not self._rbif
        if not self._rbif:
            await self._queue.delete(messages)
            self._log_batch(messages, result, "success")
            return False
        failed = parse_item_failures(result.payload, {m.message_id for m in messages})
        if failed is None:
            self._m_failed.inc(len(messages))
            self._log_batch(messages, result, "invalid_batch_item_failures")
            return False
        if failed:
            self._m_failed.inc(len(messages))
            failed = self._with_later_group_members(messages, failed) if self._fifo else failed
        await self._queue.delete([m for m in messages if m.message_id not in failed])
        self._log_batch(messages, result, "partial_failure" if failed else "success",
                        failed=len(failed))
        return False

    async def _apply_filter(self, messages: list[SqsMessage]) -> list[SqsMessage]:
        assert self._filter is not None
        keep: list[SqsMessage] = []
        drop: list[SqsMessage] = []
        for m in messages:
            body, is_json = decode_json_object(m.record["body"])
            (keep if self._filter.matches(m.record, body, is_json) else drop).append(m)
        if drop:
            self._m_filtered.inc(len(drop))
            await self._queue.delete(drop)
        return keep

    async def _invoke(self, payload: bytes, received_at: float, count: int,
                      trace: TraceContext | None) -> InvokeResult | None:
        """Invoke, retrying throttles and unreachable targets while the batch's visibility timeout
        leaves room for one more full attempt; None when the batch is given back to the queue."""
        give_up_at = received_at + self._visibility - self._function.timeout
        attempts = [0]

        async def pause(seconds: float) -> bool:
            await self._clock.sleep(seconds)
            return True

        def scheduled(error: BaseException, attempt: int, seconds: float) -> None:
            attempts[0] = attempt
            log.info("invoke_retry_scheduled", records=count, attempt=attempt, delay_seconds=round(seconds, 3),
                     reason=type(error).__name__)

        try:
            return await retrying(
                # the poller holds the permit
                lambda: self._function.invoke(payload, acquire=False, trace=trace, retry=attempts[0]), pause=pause,
                retryable=lambda e: isinstance(e, InvokeError),
                delay=lambda n, e: backoff_delay(n, base=self._settings.backoff_base_seconds,
                                                 cap=self._settings.backoff_max_seconds,
                                                 retry_after=getattr(e, "retry_after", None)),
                too_late=lambda seconds: self._stop.is_set() or self._clock.monotonic() + seconds > give_up_at,
                before_wait=scheduled)
        except InvokeError as exc:
            log.warning("batch_given_up", records=count, attempts=attempts[0] + 1, reason=type(exc).__name__,
                        error=str(exc))
            return None

    @staticmethod
    def _with_later_group_members(messages: list[SqsMessage], failed: frozenset[str]) -> frozenset[str]:
        keep = set(failed)
        blocked_groups: set[str | None] = set()
        for m in messages:
            if m.group_id in blocked_groups:
                keep.add(m.message_id)
            elif m.message_id in failed:
                blocked_groups.add(m.group_id)
        return frozenset(keep)

    def _log_batch(self, messages: list[SqsMessage], result: InvokeResult, outcome: str,
                   **extra: Any) -> None:
        log.info("batch_invoked", records=len(messages), first=messages[0].message_id,
                 last=messages[-1].message_id, duration_ms=round(result.duration_seconds * 1000, 2),
                 outcome=outcome, target_status=result.target_status, **extra)
