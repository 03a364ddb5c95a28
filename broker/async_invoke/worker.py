"""Drains one function's async queue with Lambda's rules (docs/aws-semantics.md, "Async retries",
"Async destinations", "Dead-letter queue").

Per event:
    ReservedConcurrentExecutions 0 ─► ZeroReservedConcurrency (no attempt)
    older than MaximumEventAgeInSeconds ─► EventAgeExceeded
    invoke (same request id every time) ─┬─ success ─► OnSuccess destination
                                         ├─ function error ─► retry after 60 s, then 120 s (settings),
                                         │     up to MaximumRetryAttempts, then RetriesExhausted
                                         └─ throttle / system error ─► retry with backoff 1 s..5 min,
                                               spending no attempt
A retry whose time would come after MaximumEventAgeInSeconds is not waited for: the event is given
up as EventAgeExceeded at once (Lambda's look-ahead). Given-up events go to the DLQ (original event,
RequestID/ErrorCode/ErrorMessage attributes) and the OnFailure destination. A delivery that fails is
retried later from Redis (the event stays queued, marked with its outcome), so nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from broker.async_invoke.invoke_config import InvokeConfigStore
from broker.async_invoke.queue import AsyncEvent, AsyncQueue
from broker.clock import Clock
from broker.config.models import FunctionConfig
from broker.destinations.failure_records import async_record
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError, InvokeError, StateLost
from broker.invoking.function import PERMIT_WAIT_SECONDS, Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantine, entry, last_error
from broker.retrying import backoff_delay, retrying
from broker.tracing.context import TraceContext
from broker.tracing.spans import tracing

log = structlog.get_logger("broker.async")


# Events taken per read. The worker shares the event loop with the Invoke API: a read of 64 started
# 64 invocations in one loop pass and held the API's 202s behind them (benchmarks/async.py: burst
# p99 70 ms, 5,200 accepted/s; with reads of 8: 19 ms, 6,300/s). But one read per loop pass is
# also the most the worker can take: with the loop busy, reads of 8 delivered 0.85x of what a bare
# loop reading 16 did, reads of 16 0.93x-0.99x, with the 202's p99 within the runs' noise.
READ_CHUNK = 16
# Delayed retries (60 s, 120 s, throttle backoff from a second) are moved back to the stream at most
# this often, not on every read: one round trip fewer per read under load.
_PROMOTE_EVERY_SECONDS = 0.1
# Entries of dead consumers are claimed, the queue depth measured and gone consumers forgotten this
# often (each read round once did it every tenth round: 80 commands a second under load).
_HOUSEKEEPING_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class AsyncSettings:
    retry_delays_seconds: tuple[float, ...] = (60.0, 120.0)
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    concurrency: int = 32
    poll_block_ms: int = 1000
    claim_idle_seconds: float = 60.0  # added to the function timeout


class AsyncWorker:
    def __init__(self, *, function: Function, config: FunctionConfig, queue: AsyncQueue,
                 invoke_config: InvokeConfigStore, reserved: Callable[[], int | None], sender: DestinationSender,
                 metrics: Metrics, clock: Clock, settings: AsyncSettings, consumer: str | None = None,
                 quarantine: Quarantine | None = None) -> None:
        self._function = function
        self._config = config
        self._queue = queue
        self._invoke_config = invoke_config  # EventInvokeConfig: the file's or the API's, read each second
        self._sender = sender
        self._quarantine = quarantine  # given-up events, kept with their payload
        self._clock = clock
        self._settings = settings
        self._consumer = consumer or socket.gethostname()
        self._stop = asyncio.Event()
        self._reserved = reserved  # the function's reserved concurrency now (config file or API)
        self._slot_freed = asyncio.Event()
        self._in_flight = 0
        self._metrics = metrics
        name = function.name
        self._m_age = metrics.async_event_age.labels(name)
        self._m_dropped = metrics.async_events_dropped
        self._m_destination_failures = metrics.destination_delivery_failures.labels(name)
        self._m_dlq_errors = metrics.dead_letter_errors.labels(name)
        self._m_depth = metrics.async_queue_depth.labels(name)
        self._m_state_lost = metrics.state_lost.labels("consumer_group")
        self._joined = False  # the consumer group is known to exist
        self._joined_once = False
        self._handling: set[str] = set()  # entry ids in hand

    def stop(self) -> None:
        self._stop.set()

    @property
    def ready(self) -> bool:
        """The consumer group is there and this worker reads from it (readiness)."""
        return self._joined

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(function=self._function.name)
        claim_ms = int((self._function.timeout + self._settings.claim_idle_seconds) * 1000)
        async with asyncio.TaskGroup() as group:
            promoted = housekept = -1e18
            while not self._stop.is_set():
                try:
                    if not self._joined:
                        await self._join(group)
                    now = self._clock.monotonic()
                    if now - promoted >= _PROMOTE_EVERY_SECONDS:
                        promoted = now
                        await self._queue.promote_due()
                    if now - housekept >= _HOUSEKEEPING_EVERY_SECONDS:
                        housekept = now
                        for event in await self._queue.reclaim(self._consumer, claim_ms, 100):
                            await self._start(group, event)
                        self._m_depth.set(await self._queue.depth())
                        gone = await self._queue.forget_gone_consumers(self._consumer, claim_ms)
                        if gone:
                            log.info("consumers_forgotten", consumers=gone)
                    free = self._capacity() - self._in_flight
                    if free <= 0:
                        await self._wait_for_slot()
                        continue
                    chunk = min(free, READ_CHUNK)
                    for event in await self._queue.read(self._consumer, chunk, self._settings.poll_block_ms):
                        await self._start(group, event)
                except StateLost as exc:  # Redis came back without the group: recreate it at once
                    self._joined = False
                    log.error("redis_state_lost", what="consumer_group", stream=self._queue.stream, error=str(exc))
                except BrokerError as exc:
                    log.warning("async_queue_unavailable", error=str(exc))
                    await self._clock.sleep(1.0)

    async def _join(self, group: asyncio.TaskGroup) -> None:
        """Create the consumer group if it is missing, then take up this consumer's own pending
        entries (left by a crash of this replica, or by a Redis outage mid-event)."""
        if await self._queue.ensure_group() and self._joined_once:
            self._m_state_lost.inc()
            log.error("consumer_group_recreated", stream=self._queue.stream,
                      note="events queued before Redis lost its data are gone; new events flow")
        self._joined = self._joined_once = True
        for event in await self._queue.read(self._consumer, 1000, 0, pending=True):
            if event.entry_id not in self._handling:
                await self._start(group, event)

    def _capacity(self) -> int:
        """Events in flight at most: the worker's concurrency, or fewer if the function reserves fewer."""
        reserved = self._reserved()
        return max(1, min(self._settings.concurrency, reserved or self._settings.concurrency))

    async def _wait_for_slot(self) -> None:
        while self._in_flight >= self._capacity():
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _start(self, group: asyncio.TaskGroup, event: AsyncEvent) -> None:
        await self._wait_for_slot()
        self._in_flight += 1
        group.create_task(self._guarded(event))

    async def _guarded(self, event: AsyncEvent) -> None:
        """Handle one event; a Redis error mid-way is retried here with the event in hand (each
        step done once), for up to half the claim timeout; after that the entry stays pending
        and is claimed again."""
        give_up_at = self._clock.monotonic() + self._settings.claim_idle_seconds / 2

        async def pause(seconds: float) -> bool:
            await self._clock.sleep(seconds)
            return True

        self._handling.add(event.entry_id)
        try:
            await retrying(
                lambda: self._traced(event), pause=pause,
                retryable=lambda e: isinstance(e, BrokerError) and e.retryable and not self._stop.is_set(),
                delay=lambda n, _: backoff_delay(n, base=self._settings.backoff_base_seconds,
                                                 cap=self._settings.backoff_max_seconds),
                too_late=lambda seconds: self._clock.monotonic() + seconds > give_up_at,
                before_wait=lambda e, _, seconds: log.info("async_event_retrying", request_id=event.request_id,
                                                           error=str(e), delay_seconds=round(seconds, 3)))
        except BrokerError as exc:
            log.warning("async_event_deferred", request_id=event.request_id, error=str(exc))
        finally:
            self._handling.discard(event.entry_id)
            self._in_flight -= 1
            self._slot_freed.set()

    # ------------------------------------------------------------------ one event

    def _age(self, event: AsyncEvent) -> float:
        return self._clock.time() - event.enqueued_ms / 1000

    async def _traced(self, event: AsyncEvent) -> None:
        """One step of the event, as a span of the trace it was queued in."""
        with tracing.span(f"{self._function.name} process", parent=TraceContext.from_xray(event.trace),
                          kind="consumer", now=self._clock.time(), messaging__system="broker",
                          messaging__operation="process", messaging__destination__name=self._function.name,
                          messaging__message__id=event.request_id, broker__attempts=event.attempts) as span:
            await self._handle(event, span.context)

    async def _handle(self, event: AsyncEvent, trace: TraceContext) -> None:
        await self._invoke_config.refresh()  # at most one read a second: an event never meets a config older than that
        cfg = self._invoke_config.current
        if await self._resumed(event):
            return
        if self._reserved() == 0:
            await self._conclude(event, "ZeroReservedConcurrency")
            return
        if self._age(event) > cfg.MaximumEventAgeInSeconds:
            await self._conclude(event, "EventAgeExceeded")
            return
        self._m_age.observe(self._age(event))
        try:
            result = await self._function.invoke(event.payload.encode(), request_id=event.request_id,
                                                 wait_seconds=PERMIT_WAIT_SECONDS, trace=trace, retry=event.invokes)
        except InvokeError as exc:
            delay = backoff_delay(event.throttles, base=self._settings.backoff_base_seconds,
                                  cap=self._settings.backoff_max_seconds, retry_after=exc.retry_after)
            event.throttles += 1
            await self._retry_or_expire(event, delay, reason=type(exc).__name__)
            return
        event.invokes += 1
        event.last = {"status": 200, "functionError": result.function_error,
                      "payload": result.payload.decode("utf-8", "replace")}
        if result.ok:
            await self._conclude(event, "Success")
            return
        event.attempts += 1
        if event.attempts > cfg.MaximumRetryAttempts:
            await self._conclude(event, "RetriesExhausted")
            return
        delays = self._settings.retry_delays_seconds
        await self._retry_or_expire(event, delays[min(event.attempts - 1, len(delays) - 1)], reason="FunctionError")

    async def _resumed(self, event: AsyncEvent) -> bool:
        """Finish what an earlier try decided (a retry's move, an outcome's delivery); False if nothing was."""
        if event.scheduled is not None:  # decided in an earlier try of this step: only the move is owed
            await self._queue.retry_later(event, event.scheduled)
        elif event.outcome:  # decided earlier (maybe before a crash): only the delivery is owed
            await self._conclude(event, event.outcome)
        else:
            return False
        return True

    async def _retry_or_expire(self, event: AsyncEvent, delay: float, *, reason: str) -> None:
        if self._age(event) + delay > self._invoke_config.current.MaximumEventAgeInSeconds:
            await self._conclude(event, "EventAgeExceeded")
            return
        log.info("async_retry_scheduled", request_id=event.request_id, delay_seconds=round(delay, 3), reason=reason,
                 attempts=event.attempts)
        event.scheduled = delay
        await self._queue.retry_later(event, delay)

    async def _conclude(self, event: AsyncEvent, condition: str) -> None:
        """Deliver the outcome; if a delivery fails, keep the event queued with its outcome and retry later."""
        event.outcome = condition
        if condition != "Success" and not event.delivered:
            await self._keep(event, condition)
        if not event.delivered:
            event.delivered = await self._deliver(event, condition)
        if not event.delivered:
            event.throttles += 1
            event.scheduled = backoff_delay(event.throttles, base=self._settings.backoff_base_seconds,
                                            cap=self._settings.backoff_max_seconds)
            await self._queue.retry_later(event, event.scheduled)
            return
        if condition != "Success":
            self._m_dropped.labels(self._function.name, condition).inc()
        log.info("async_event_done", request_id=event.request_id, condition=condition, invokes=event.invokes)
        await self._queue.finish(event)

    async def _keep(self, event: AsyncEvent, condition: str) -> None:
        """The given-up event into the quarantine, under its request id (written again on a retried
        step, it stays one entry). A Redis error retries the step with the event in hand."""
        if self._quarantine is None:
            return
        last = event.last or {}
        error = (last_error(last.get("payload"), last.get("functionError"), last.get("status"))
                 if event.last else None)
        try:
            record = json.loads(event.payload)
        except ValueError:
            record = event.payload
        attempts = event.earlier_attempts + event.invokes
        await self._quarantine.add([entry(id_=event.request_id, reason=condition, attempts=attempts,
                                          quarantined_at=self._clock.time(), last_error=error, record=record)])

    async def _deliver(self, event: AsyncEvent, condition: str) -> bool:
        dest = self._invoke_config.current.DestinationConfig
        target = (dest.OnSuccess if condition == "Success" else dest.OnFailure) if dest else None
        ok = True
        if condition != "Success" and self._config.DeadLetterConfig and self._config.DeadLetterConfig.TargetArn:
            ok = await self._send_to_dlq(event, self._config.DeadLetterConfig.TargetArn) and ok
        if target and target.Destination:
            record = async_record(request_id=event.request_id, function_arn=self._function.arn, condition=condition,
                                  invoke_count=event.invokes, timestamp=self._clock.time(),
                                  request_payload=event.payload,
                                  last=None if condition == "ZeroReservedConcurrency" else event.last)
            kind = "Success" if condition == "Success" else "Failure"
            try:
                await self._sender.deliver(target.Destination, record, trace=event.trace,
                                           detail_type=f"Lambda Function Invocation Result - {kind}",
                                           s3_key=f"aws/lambda/async/{self._function.name}/{event.request_id}.json")
                log.info("sent_to_destination", destination=target.Destination, condition=condition,
                         request_id=event.request_id)
            except BrokerError as exc:
                self._m_destination_failures.inc()
                log.warning("destination_delivery_failed", destination=target.Destination, error=str(exc))
                ok = False
        return ok

    async def _send_to_dlq(self, event: AsyncEvent, arn: str) -> bool:
        last = event.last or {}
        message = ""
        if last.get("payload"):
            try:
                body = json.loads(last["payload"])
                message = str(body.get("errorMessage", "")) if isinstance(body, dict) else str(body)
            except ValueError:
                message = str(last["payload"])
        attributes = {
            "RequestID": {"DataType": "String", "StringValue": event.request_id},
            "ErrorCode": {"DataType": "Number", "StringValue": str(last.get("status", 200))},
            "ErrorMessage": {"DataType": "String", "StringValue": (message or "Event was not processed")[:1024]},
        }
        try:
            await self._sender.deliver(arn, {}, body=event.payload, attributes=attributes, trace=event.trace)
        except BrokerError as exc:
            self._m_dlq_errors.inc()
            log.warning("dead_letter_failed", destination=arn, error=str(exc))
            return False
        log.info("sent_to_dlq", destination=arn, request_id=event.request_id)
        return True
