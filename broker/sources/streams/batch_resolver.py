"""Resolving one stream batch by the stream rules, and the final invocation of a tumbling window
(docs/aws-semantics.md: "Mapping parameters", "Partial batch responses", "Kinesis ordering and
checkpoints", "Tumbling windows", "Errors, throttles and timeouts").

Throttles and unreachable targets are retried with backoff without spending attempts; function
errors spend one attempt each (``MaximumRetryAttempts``, -1 = forever) or, with
``BisectBatchOnFunctionError``, split the batch in two without spending any; a partial batch
response resumes from the lowest reported sequence number; records older than
``MaximumRecordAgeInSeconds`` are given up. What is given up goes to the on-failure destination
(retried until delivered, or the shard waits) or, without one, is dropped and counted. Records are
handed back to the shard (``Shard.handled``) as they are done, for its checkpoint.

With ``IsolateFailingKeys``, the record a failure names (the lowest reported item, or the one
record left after bisecting) is parked with every later record of its key (``parking``), the
checkpoint passes them once stored, and the batch goes on with the other keys' records; records of
a key already parked are parked before any invocation. ``resolve_parked`` applies the rules to a
parked key's oldest record, one try at a time.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from broker.batching.envelope import records_event
from broker.batching.partial_failures import parse_item_failures
from broker.clock import Clock
from broker.destinations.failure_records import response_context
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError
from broker.invoking.function import PERMIT_WAIT_SECONDS, Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantine, last_error
from broker.retrying import Stopped as Waiting
from broker.retrying import backoff_delay, retrying
from broker.sources.streams.give_up import FailurePath
from broker.sources.streams.parking import ParkedKeys
from broker.sources.streams.service import StreamService
from broker.sources.streams.shard_state import ShardActivity
from broker.sources.streams.types import Lane, StreamMappingSpec, StreamSettings
from broker.sources.streams.windows import response_state, state_too_large
from broker.tracing.context import TraceContext
from broker.tracing.spans import tracing
from broker.types import InvokeResult, StreamRecord

log = structlog.get_logger("broker.streams")


@dataclass
class _Work:
    """A batch (or a part of one after bisecting or a partial response) being resolved."""

    records: list[StreamRecord]
    lane: Lane
    attempts: int = 0  # function errors spent
    invokes: int = 0  # invocations of exactly these records
    request_id: str = ""
    last: InvokeResult | None = None
    trace: TraceContext | None = None  # every attempt of these records is a span of one trace


class Stopped(Exception):
    """stop() arrived while a batch was being resolved."""


class _FinalInvokeFailed(BrokerError):
    """A tumbling window's final invocation answered a function error: tried again until it succeeds."""

    retryable = True


class Shard(Protocol):
    """What the resolver needs of the shard it works for (``shard_state.ShardState``)."""

    @property
    def shard_id(self) -> str: ...

    @property
    def stopped(self) -> asyncio.Event: ...

    @property
    def activity(self) -> ShardActivity: ...

    async def sleep(self, seconds: float) -> bool:
        """Wait; False if the shard stopped meanwhile."""

    async def handled(self, records: list[StreamRecord], lane: Lane) -> None:
        """These records are done (succeeded or given up): the checkpoint may pass them."""

    def lose_lease(self) -> None:
        """A fenced write found the lease gone: stop at once, never checkpoint again."""


class BatchResolver:
    def __init__(self, shard: Shard, *, service: StreamService, spec: StreamMappingSpec, function: Function,
                 sender: DestinationSender, metrics: Metrics, clock: Clock, settings: StreamSettings,
                 on_result: Callable[[str], None], quarantine: Quarantine | None = None,
                 parked: ParkedKeys | None = None) -> None:
        shard_id = shard.shard_id
        self._shard_id = shard_id
        # the stream (Kinesis) or table (DynamoDB) the spans name
        self._source_name = service.arn.split(":", 5)[-1].split("/")[1] if "/" in service.arn else service.arn
        self._service = service
        self._spec = spec
        self._function = function
        self._clock = clock
        self._settings = settings
        self._sleep = shard.sleep
        self._stopped = shard.stopped
        self._handled = shard.handled
        self._shard = shard
        self._activity = shard.activity
        self._parked = parked
        self._isolating = spec.isolate_failing_keys and parked is not None
        self._on_result = on_result
        labels = (function.name, spec.uuid)
        self._m_invoked = metrics.invoked_events.labels(*labels)
        self._m_failed = metrics.failed_invoke_events.labels(*labels)
        self._failures = FailurePath(shard_id=shard_id, service=service, spec=spec, function=function, sender=sender,
                                     quarantine=quarantine, metrics=metrics, clock=clock, sleep=shard.sleep,
                                     backoff=self._backoff)
        self._m_age = metrics.iterator_age.labels(*labels, shard_id)

    async def resolve(self, batch: list[StreamRecord], lane: Lane) -> None:
        self._activity.in_flight += 1
        try:
            with tracing.span(f"{self._source_name} process", parent=None, kind="consumer", now=self._clock.time(),
                              messaging__system=f"aws_{self._service.kind.value}", messaging__operation="process",
                              messaging__destination__name=self._source_name,
                              messaging__destination__partition__id=self._shard_id,
                              messaging__batch__message_count=len(batch)) as span:
                work = collections.deque([_Work(batch, lane, trace=span.context)])
                while work:
                    if self._stopped.is_set():
                        raise Stopped
                    if await self._step(work[0], work):
                        work.popleft()
        finally:
            self._activity.in_flight -= 1

    async def _step(self, w: _Work, work: collections.deque[_Work]) -> bool:
        """One step on the first piece of work: True once it is done."""
        if self._parked is not None and self._parked.keys and not await self._behind_parked(w):
            return True
        expired = self._expired_prefix(w.records)
        if expired:
            await self._give_up(expired, "RecordAgeExceeded", w, response=None)
            w.records = w.records[len(expired):]
            return not w.records
        result = await self._invoke(w)
        if result is None:  # records aged out while throttled: the age check takes them next
            return False
        if w.lane.window is not None and result.ok:
            result = await self._take_state(w.lane, result)
        failed = (parse_item_failures(result.payload, {r.sequence for r in w.records})
                  if result.ok and self._spec.report_batch_item_failures else frozenset())
        self._log_invoked(w, result, failed)
        if result.ok and failed == frozenset():
            await self._handled(w.records, w.lane)
            self._on_result("OK")
            self._activity.going()
            return True
        self._activity.struggling(self._clock.time(), last_error(
            result.payload, result.function_error, result.target_status) or {
                "errorMessage": "the function reported failed batch items" if failed else "invalid batchItemFailures"})
        self._m_failed.inc(len(w.records))
        self._on_result("PROBLEM: Function call failed")
        return await self._failed(w, work, result, failed)

    async def _failed(self, w: _Work, work: collections.deque[_Work], result: InvokeResult,
                      failed: frozenset[str] | None) -> bool:
        """After a failed invocation: resume from a partial response, bisect, park the failing
        record's key, or spend an attempt (and give up after the last). True once ``w`` is done."""
        spec = self._spec
        if result.ok and failed:  # a valid partial response: resume from the lowest reported
            lowest = min(failed, key=int)
            cut = next(i for i, r in enumerate(w.records) if r.sequence == lowest)
            await self._handled(w.records[:cut], w.lane)
            w.records = w.records[cut:]
            if self._isolating:
                return not await self._isolate(w, w.records[0])
        elif spec.bisect and len(w.records) > 1:  # splitting spends no attempt
            mid = len(w.records) // 2
            work.popleft()
            work.appendleft(_Work(w.records[mid:], w.lane, attempts=w.attempts, trace=w.trace))
            work.appendleft(_Work(w.records[:mid], w.lane, attempts=w.attempts, trace=w.trace))
            log.info("batch_bisected", records=len(w.records), halves=(mid, len(w.records) - mid))
            return False
        elif self._isolating and len(w.records) == 1:
            await self._isolate(w, w.records[0])
            return True
        w.attempts += 1
        if 0 <= spec.max_retry_attempts < w.attempts:
            error = result.function_error if not result.ok else None
            await self._give_up(w.records, "RetryAttemptsExhausted", w, response=response_context(error))
            return True
        if not await self._sleep(self._backoff(w.attempts - 1)):
            raise Stopped
        return False

    # ------------------------------------------------------------------ parked keys (IsolateFailingKeys)

    async def _behind_parked(self, w: _Work) -> bool:
        """Records of keys parked already are parked behind them; False if none of ``w`` is left."""
        parked = self._parked
        assert parked is not None
        held = [r for r in w.records if parked.holds(r.key)]
        if held:
            await self._park(held, w, failing=None)
            w.records = [r for r in w.records if not parked.holds(r.key)]
        return bool(w.records)

    async def _isolate(self, w: _Work, failing: StreamRecord) -> bool:
        """``failing`` and the later records of its key are parked; the other keys' records stay
        in ``w`` (not yet known to have succeeded), with no attempt spent. False if none are left."""
        mine = [r for r in w.records if r.key == failing.key]
        await self._park(mine, w, failing=failing)
        log.warning("key_parked", key=failing.key, sequence=failing.sequence, records=len(mine))
        w.records = [r for r in w.records if r.key != failing.key]
        w.attempts = 0
        return bool(w.records)

    async def _park(self, records: list[StreamRecord], w: _Work, *, failing: StreamRecord | None) -> None:
        """Park records (grouped by key, in order), stored before the checkpoint may pass them."""
        parked = self._parked
        assert parked is not None
        by_key: dict[str, list[StreamRecord]] = collections.defaultdict(list)
        for r in records:
            by_key[r.key].append(r)
        for key, group in by_key.items():
            new = parked.take(group, attempts=1 if failing is not None and failing.key == key else 0, last=w.last)
            try:
                stored = await retrying(functools.partial(parked.store, new), pause=self._sleep,
                                        retryable=lambda e: isinstance(e, BrokerError) and e.retryable,
                                        delay=lambda n, _: self._backoff(n),
                                        before_wait=lambda e, _n, _s: log.warning("parking_unavailable",
                                                                                  error=str(e)))
            except Waiting as exc:
                raise Stopped from exc
            if not stored:
                self._shard.lose_lease()
                raise Stopped
        await self._handled(records, w.lane)

    async def resolve_parked(self, record: StreamRecord, *, attempts: int,
                             last: InvokeResult | None) -> tuple[bool, InvokeResult | None]:
        """One try of a parked key's oldest record by the rules: (True, _) once it is done
        (delivered, or given up after its attempts or its age), (False, answer) if it failed again."""
        w = _Work([record], Lane(), attempts=attempts, invokes=attempts, last=last)
        if self._expired_prefix(w.records):
            await self._give_up(w.records, "RecordAgeExceeded", w, response=None)
            return True, None
        if 0 <= self._spec.max_retry_attempts < attempts:
            error = last.function_error if last is not None and not last.ok else None
            await self._give_up(w.records, "RetryAttemptsExhausted", w, response=response_context(error))
            return True, None
        result = await self._invoke(w)
        if result is None:  # aged out while throttled: given up on the next try
            return False, None
        failed = (parse_item_failures(result.payload, {record.sequence})
                  if result.ok and self._spec.report_batch_item_failures else frozenset())
        self._log_invoked(w, result, failed)
        if result.ok and failed == frozenset():
            return True, result
        self._m_failed.inc()
        return False, result

    def backoff(self, attempt: int) -> float:
        return self._backoff(attempt)

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
        records aged past MaximumRecordAgeInSeconds meanwhile; Stopped on stop()."""
        window = w.lane.window
        payload = (window.event(w.records, shard_id=self._shard_id, source_arn=self._service.arn)
                   if window else records_event(r.encoded for r in w.records))

        async def attempt() -> InvokeResult:
            w.request_id = str(uuid.uuid4())
            age = max(0.0, self._clock.time() - w.records[-1].arrival)
            self._m_age.set(age)
            self._activity.iterator_age_ms = round(age * 1000)
            w.trace = w.trace or self._function.new_trace()
            return await self._function.invoke(payload, request_id=w.request_id, wait_seconds=PERMIT_WAIT_SECONDS,
                                               trace=w.trace, retry=w.invokes)

        def aged(exc: BaseException) -> bool:  # a retryable failure, but records aged out meanwhile
            return isinstance(exc, BrokerError) and exc.retryable and bool(self._expired_prefix(w.records))

        try:  # throttled, unreachable, or Redis away for the permit: no attempt spent
            result = await retrying(
                attempt, pause=self._sleep,
                retryable=lambda e: isinstance(e, BrokerError) and e.retryable and not aged(e),
                delay=lambda n, e: self._backoff(n, getattr(e, "retry_after", None)),
                before_wait=self._retry_scheduled(w))
        except Waiting as exc:
            raise Stopped from exc
        except BrokerError as exc:
            if aged(exc):
                return None
            raise
        w.invokes += 1
        w.last = result
        self._m_invoked.inc(len(w.records))
        return result

    def _retry_scheduled(self, w: _Work) -> Callable[[BaseException, int, float], None]:
        def scheduled(error: BaseException, _n: int, _s: float) -> None:
            log.info("invoke_retry_scheduled", records=len(w.records), reason=type(error).__name__)
            self._activity.struggling(self._clock.time(), {"errorType": type(error).__name__,
                                                           "errorMessage": str(error)})
        return scheduled

    @staticmethod
    def _log_invoked(w: _Work, result: InvokeResult, failed: frozenset[str] | None) -> None:
        """One line per invocation saying what came of it: success, partial_failure (with the count
        of reported items), invalid_batch_item_failures (the whole batch failed) or function_error."""
        fields: dict[str, Any] = {}
        if not result.ok:
            outcome = "function_error"
        elif failed is None:
            outcome = "invalid_batch_item_failures"
        elif failed:
            outcome, fields["failed"] = "partial_failure", len(failed)
        else:
            outcome = "success"
        log.info("batch_invoked", records=len(w.records), first=w.records[0].sequence,
                 last=w.records[-1].sequence, attempt=w.attempts + 1,
                 duration_ms=round(result.duration_seconds * 1000, 2), outcome=outcome, **fields)

    async def _give_up(self, records: list[StreamRecord], condition: str, w: _Work,
                       response: dict[str, Any] | None) -> None:
        """The failure path (``give_up``), then the checkpoint may pass the records."""
        try:
            await self._failures.send_off(records, condition, invokes=w.invokes, request_id=w.request_id,
                                          last=w.last, response=response,
                                          trace=w.trace.xray if w.trace else "")
        except Waiting as exc:
            raise Stopped from exc
        await self._handled(records, w.lane)

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
            await self.close_window(lane)
            lane.open_window(window.start, window.seconds)
        return result

    async def close_window(self, lane: Lane) -> None:
        """The window's final invocation, retried until it succeeds (the shard waits, as Lambda's
        does); then the checkpoint passes the window's records and its state is dropped."""
        window = lane.window
        if window is None:
            return
        payload = window.event([], shard_id=self._shard_id, source_arn=self._service.arn, final=True)

        async def final() -> None:
            result = await self._function.invoke(payload, wait_seconds=PERMIT_WAIT_SECONDS)
            if not result.ok:
                log.warning("window_final_invoke_failed", window_start=window.start, error=result.function_error)
                raise _FinalInvokeFailed(result.function_error or "")

        try:
            await retrying(final, pause=self._sleep,
                           retryable=lambda e: isinstance(e, BrokerError) and e.retryable,
                           delay=lambda n, e: self._backoff(n, getattr(e, "retry_after", None)))
        except Waiting as exc:
            raise Stopped from exc
        lane.end_window()
        log.info("window_closed", window_start=window.start, records=len(window.held),
                 terminated_early=window.terminated_early)
        await self._handled(window.held, lane)
