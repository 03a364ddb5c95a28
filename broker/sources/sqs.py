"""SQS event source mappings (spec §1.1-§1.5, §2.2, §3.1).

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
import json
import math
import random
from dataclasses import dataclass
from typing import Any

import structlog

from broker.aws import call
from broker.batching.filtering import RecordFilter, decode_json_object
from broker.batching.partial_failures import parse_item_failures
from broker.batching.policies import backoff_delay
from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.errors import BrokerError, InvokeError, TargetThrottled
from broker.invoking.base import Function
from broker.observability.metrics import Metrics
from broker.sources.records import sqs_record
from broker.types import InvokeResult, SqsMessage

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_ENVELOPE_BYTES = len(b'{"Records":[]}')
_MAX_RECEIVE = 10
_MAX_PARALLEL_RECEIVES = 10
_DELETE_ATTEMPTS = 3
log = structlog.get_logger("broker.sqs")
_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per record


@dataclass(frozen=True)
class SqsSettings:
    wait_time_seconds: int = 20
    initial_pollers: int = 5
    min_pollers: int = 2
    max_pollers: int = 1250
    scale_up_per_minute: int = 300
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0


class SqsMapping:
    """All pollers of one SQS mapping."""

    def __init__(self, *, esm: EventSourceMapping, function: Function, sqs: Any, queue_url: str,
                 visibility_timeout: int, region: str, settings: SqsSettings, metrics: Metrics,
                 clock: Clock) -> None:
        assert esm.UUID is not None
        assert esm.BatchSize is not None
        self.esm = esm
        self._function = function
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = esm.EventSourceArn
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
        self._last_growth = -math.inf
        self._stop = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        labels = (function.name, esm.UUID)
        self._m_polled = metrics.polled_events.labels(*labels)
        self._m_filtered = metrics.filtered_out_events.labels(*labels)
        self._m_invoked = metrics.invoked_events.labels(*labels)
        self._m_failed = metrics.failed_invoke_events.labels(*labels)
        self._m_deleted = metrics.deleted_events.labels(*labels)
        self._m_returned = metrics.returned_events.labels(*labels)
        self._m_pollers = metrics.pollers.labels(*labels)

    @property
    def pollers(self) -> int:
        return self._pollers

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
        await call(self._sqs.get_queue_attributes, attempts=1, QueueUrl=self._queue_url,
                   AttributeNames=["VisibilityTimeout"])

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
        throttled = 0
        idle = False
        try:
            while not self._stop.is_set():
                if idle:  # let waiting consumers of the same pool take the permit between idle polls
                    await self._clock.sleep(random.uniform(0.05, 0.25))
                    idle = False
                try:
                    # The permit is held before ReceiveMessage: a throttled function never spends
                    # receive counts (nor sends healthy messages towards the DLQ).
                    async with self._function.permit():
                        throttled = 0
                        batch, carry = await self._collect(carry)
                        if batch is not None and self._stop.is_set():
                            carry = batch + carry
                            break
                        if batch is None:
                            if self._retire():
                                return
                            idle = True
                            continue
                        if len(batch) + len(carry) >= self._batch_size:
                            self._grow()
                        backed_off = await self._process(batch)
                except TargetThrottled as exc:
                    log.info("poller_throttled", reason=exc.reason)
                    if self._retire():
                        return
                    await self._clock.sleep(backoff_delay(throttled, base=self._settings.backoff_base_seconds,
                                                          cap=self._settings.backoff_max_seconds))
                    throttled += 1
                    continue
                if backed_off and self._retire():
                    return
        finally:
            if carry:
                await asyncio.shield(self._make_visible(carry))
        self._pollers -= 1
        self._m_pollers.set(max(self._pollers, 0))

    async def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        response = await call(
            self._sqs.receive_message,
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _wrap(self, message: dict[str, Any], received_at: float) -> SqsMessage:
        record = sqs_record(message, queue_arn=self._queue_arn, region=self._region)
        group = message.get("Attributes", {}).get("MessageGroupId")
        return SqsMessage(message["MessageId"], message["ReceiptHandle"], group, record,
                          _encode(record).encode(), received_at)

    async def _collect(self, carry: list[SqsMessage]) -> tuple[list[SqsMessage] | None, list[SqsMessage]]:
        """Gather one batch and what did not fit in it; (None, []) after an empty idle long poll.

        The window opens when the first message is in hand (an idle long poll does not count)."""
        messages: list[SqsMessage] = []
        size = _ENVELOPE_BYTES
        pending = list(carry)
        deadline: float | None = None
        deep = False  # the last receive came back full: the queue has more
        while True:
            while pending and len(messages) < self._batch_size:
                nxt = pending[0]
                if messages and size + len(nxt.encoded) + 1 > MAX_PAYLOAD_BYTES:
                    return messages, pending
                messages.append(pending.pop(0))
                size += len(nxt.encoded) + 1
            if pending or len(messages) >= self._batch_size:
                return messages, pending
            want = self._batch_size - len(messages)
            if not messages:
                raw = await self._receive(min(_MAX_RECEIVE, want), self._settings.wait_time_seconds)
                if not raw:
                    return None, []
                deep = len(raw) == _MAX_RECEIVE
            else:
                if deadline is None:
                    deadline = messages[0].received_at + self._window
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return messages, pending
                raw = await self._receive_many(want if deep else min(_MAX_RECEIVE, want),
                                               min(20, math.ceil(remaining)))
                deep = len(raw) >= _MAX_RECEIVE
            self._m_polled.inc(len(raw))
            now = self._clock.monotonic()
            pending.extend(self._wrap(m, now) for m in raw)

    async def _receive_many(self, want: int, wait: int) -> list[dict[str, Any]]:
        """Fill a large batch from a deep queue with concurrent receives of 10 (one round trip,
        not BatchSize/10 of them)."""
        asks = [min(_MAX_RECEIVE, want - start) for start in range(0, min(want, _MAX_PARALLEL_RECEIVES * 10), 10)]
        if len(asks) == 1:
            return await self._receive(asks[0], wait)
        results = await asyncio.gather(*(self._receive(n, wait) for n in asks))
        return [m for batch in results for m in batch]

    # ------------------------------------------------------------------ processing

    async def _process(self, batch: list[SqsMessage]) -> bool:
        """Filter, invoke, delete. True if the poller should back off (function error)."""
        received_at = min(m.received_at for m in batch)
        messages = batch
        if self._filter is not None:
            messages = await self._apply_filter(messages)
            if not messages:
                return False
        payload = b'{"Records":[' + b",".join(m.encoded for m in messages) + b"]}"
        result = await self._invoke(payload, received_at, len(messages))
        if result is None:
            return True
        self._m_invoked.inc(len(messages))
        if not result.ok:
            self._m_failed.inc(len(messages))
            self._log_batch(messages, result, "function_error")
            return not self._rbif
        if not self._rbif:
            await self._delete(messages)
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
        await self._delete([m for m in messages if m.message_id not in failed])
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
            await self._delete(drop)
        return keep

    async def _invoke(self, payload: bytes, received_at: float, count: int) -> InvokeResult | None:
        """Invoke, retrying throttles and unreachable targets while the batch's visibility timeout
        leaves room for one more full attempt; None when the batch is given back to the queue."""
        give_up_at = received_at + self._visibility - self._function.timeout
        attempt = 0
        while True:
            try:
                return await self._function.invoke(payload, acquire=False)  # the poller holds the permit
            except InvokeError as exc:
                delay = backoff_delay(attempt, base=self._settings.backoff_base_seconds,
                                      cap=self._settings.backoff_max_seconds,
                                      retry_after=exc.retry_after)
                if self._stop.is_set() or self._clock.monotonic() + delay > give_up_at:
                    log.warning("batch_given_up", records=count, attempts=attempt + 1,
                                reason=type(exc).__name__, error=str(exc))
                    return None
                log.info("invoke_retry_scheduled", records=count, attempt=attempt + 1,
                         delay_seconds=round(delay, 3), reason=type(exc).__name__)
                attempt += 1
                await self._clock.sleep(delay)

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

    # ------------------------------------------------------------------ queue operations

    async def _delete(self, messages: list[SqsMessage]) -> None:
        if not messages:  # every message of the batch was reported as failed
            return
        if len(messages) <= 10:
            await self._delete_chunk(messages)
            return
        await asyncio.gather(*(self._delete_chunk(messages[i:i + 10]) for i in range(0, len(messages), 10)))

    async def _delete_chunk(self, chunk: list[SqsMessage]) -> None:
        entries = {str(i): m.receipt_handle for i, m in enumerate(chunk)}
        for attempt in range(_DELETE_ATTEMPTS):
            try:
                response = await call(
                    self._sqs.delete_message_batch, QueueUrl=self._queue_url,
                    Entries=[{"Id": k, "ReceiptHandle": v} for k, v in entries.items()])
            except BrokerError as exc:
                log.warning("delete_failed", records=len(entries), error=str(exc))
                return
            for ok in response.get("Successful", []):
                entries.pop(ok["Id"], None)
            self._m_deleted.inc(len(response.get("Successful", [])))
            if not entries:
                return
            failed = response.get("Failed", [])
            if failed and all(f.get("SenderFault") for f in failed):
                break  # a stale receipt handle will not get better by retrying
            await self._clock.sleep(0.1 * (attempt + 1))
        log.warning("delete_failed", records=len(entries),
                    reasons=sorted({f.get("Code", "") for f in response.get("Failed", [])}))

    async def _make_visible(self, messages: list[SqsMessage]) -> None:
        """Give unprocessed messages back to the queue at once (ChangeMessageVisibility 0)."""
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            try:
                await call(self._sqs.change_message_visibility_batch, QueueUrl=self._queue_url,
                           Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle,
                                     "VisibilityTimeout": 0} for i, m in enumerate(chunk)])
                self._m_returned.inc(len(chunk))
            except BrokerError as exc:
                log.warning("return_to_queue_failed", records=len(chunk), error=str(exc))
