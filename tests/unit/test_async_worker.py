"""AsyncWorker's rules against an in-memory queue twin on a virtual clock: function errors retried
after 60 s then 120 s and then given up to the DLQ and OnFailure; throttles retried without spending
attempts; the age look-ahead; reserved concurrency 0; a failed delivery kept with its outcome and
delivered later without invoking the function again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.async_invoke.queue import AsyncEvent
from broker.async_invoke.worker import AsyncSettings, AsyncWorker
from broker.clock import SystemClock
from broker.config.models import EventInvokeConfigSpec, FunctionConfig
from broker.errors import AwsError, TargetThrottled
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.types import InvokeContext, InvokeResult
from tests.unit.virtual_clock import VirtualClock

DLQ = "arn:aws:sqs:us-east-1:000000000000:dlq"
ON_FAILURE = "arn:aws:sqs:us-east-1:000000000000:failed"
START = 1_000_000.0


class QueueTwin:
    """Enough of the Redis queue: read hands out what is due; a retry moves the event back once its
    delay has passed on the virtual clock (the twin moves the clock on: nobody waits)."""

    stream = "twin"

    def __init__(self, clock: VirtualClock, events: list[AsyncEvent]) -> None:
        self.clock = clock
        self.ready = list(events)
        self.retries: list[tuple[str, float, int]] = []  # request id, delay, attempts spent
        self.finished: list[tuple[str, str | None]] = []  # request id, outcome

    async def ensure_group(self) -> bool:
        return True

    async def read(self, consumer: str, count: int, block_ms: int, *, pending: bool = False) -> list[AsyncEvent]:
        if pending or not self.ready:
            await asyncio.sleep(0.001)
            return []
        taken, self.ready = self.ready[:count], self.ready[count:]
        return taken

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[AsyncEvent]:
        return []

    async def promote_due(self, limit: int = 100) -> int:
        return 0

    async def depth(self) -> int:
        return len(self.ready)

    async def forget_gone_consumers(self, consumer: str, idle_ms: int) -> list[str]:
        return []

    async def retry_later(self, event: AsyncEvent, delay_seconds: float) -> None:
        self.retries.append((event.request_id, delay_seconds, event.attempts))
        self.clock.now += delay_seconds
        event.scheduled = None  # as read back from Redis: only the stored document comes back
        event.delivered = False
        self.ready.append(event)

    async def finish(self, event: AsyncEvent) -> None:
        self.finished.append((event.request_id, event.outcome))


class InvokeConfig:
    def __init__(self, spec: EventInvokeConfigSpec) -> None:
        self.current = spec

    async def refresh(self) -> None:
        return None


class Sender:
    """Records what reaches a destination or the DLQ; refuses the first ``refuse`` deliveries."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def deliver(self, destination: str, document: dict[str, Any], **kwargs: Any) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            raise AwsError("ServiceUnavailable", "the destination is away", retryable=True)
        self.sent.append((destination, {**document, **kwargs}))


class Target:
    """Answers each invocation with the next of ``answers``: "ok", "error" or "throttle"."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.request_ids: list[str] = []

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        self.request_ids.append(ctx.request_id)
        answer = self.answers.pop(0) if self.answers else "ok"
        if answer == "throttle":
            raise TargetThrottled("f: Rate Exceeded.", reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        if answer == "error":
            return InvokeResult(b'{"errorType": "ValueError", "errorMessage": "bad"}', "Unhandled")
        return InvokeResult(b'"done"')


async def drain(target: Target, *events: AsyncEvent, sender: Sender | None = None, reserved: int | None = None,
                age: int = 21600, dlq: bool = True) -> tuple[QueueTwin, Sender]:
    clock = VirtualClock(START)
    queue = QueueTwin(clock, list(events))
    sender = sender or Sender()
    metrics = Metrics()
    function = Function(name="f", arn="arn:aws:lambda:us-east-1:000000000000:function:f", timeout=3,
                        invoker=target, metrics=metrics, clock=SystemClock())
    config = FunctionConfig.model_validate({"Target": {"Url": "http://127.0.0.1:1/"},
                                            **({"DeadLetterConfig": {"TargetArn": DLQ}} if dlq else {})})
    spec = EventInvokeConfigSpec.model_validate({"MaximumEventAgeInSeconds": age, "DestinationConfig": {
        "OnFailure": {"Destination": ON_FAILURE}}})
    worker = AsyncWorker(function=function, config=config, queue=queue, invoke_config=InvokeConfig(spec),  # type: ignore[arg-type]
                         reserved=lambda: reserved, sender=sender, metrics=metrics, clock=clock,  # type: ignore[arg-type]
                         settings=AsyncSettings(backoff_base_seconds=1, backoff_max_seconds=300))
    running = asyncio.create_task(worker.run())
    while len(queue.finished) < len(events):
        assert not running.done(), running.exception()
        await asyncio.sleep(0.001)
    worker.stop()
    await running
    return queue, sender


def event(request_id: str = "r1", age: float = 0.0) -> AsyncEvent:
    return AsyncEvent(request_id, '{"n": 1}', enqueued_ms=int((START - age) * 1000), entry_id=f"{request_id}-0")


@pytest.mark.timeout(10)
async def test_function_errors_retry_after_60_then_120_seconds_then_go_to_dlq_and_on_failure() -> None:
    target = Target("error", "error", "error")
    queue, sender = await drain(target, event())
    assert [(delay, attempts) for _, delay, attempts in queue.retries] == [(60.0, 1), (120.0, 2)]
    assert target.request_ids == ["r1"] * 3, "the same request id on every attempt"
    assert queue.finished == [("r1", "RetriesExhausted")]
    (dlq, message), (destination, record) = sender.sent
    assert dlq == DLQ
    assert message["body"] == '{"n": 1}'
    assert message["attributes"]["ErrorMessage"]["StringValue"] == "bad"
    assert destination == ON_FAILURE
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3


@pytest.mark.timeout(10)
async def test_throttles_retry_with_backoff_without_spending_attempts() -> None:
    target = Target("throttle", "throttle", "throttle", "ok")
    queue, sender = await drain(target, event())
    assert [attempts for _, _, attempts in queue.retries] == [0, 0, 0]
    delays = [delay for _, delay, _ in queue.retries]
    for n, delay in enumerate(delays):  # 1 s, 2 s, 4 s with jitter on the upper half
        assert 2 ** n / 2 <= delay <= 2 ** n, delays
    assert queue.finished == [("r1", "Success")]
    assert sender.sent == [], "no OnSuccess destination is configured"


@pytest.mark.timeout(10)
async def test_a_retry_that_would_come_after_the_maximum_age_gives_up_at_once() -> None:
    target = Target("error")
    queue, sender = await drain(target, event(age=30), age=60)  # 30 s old + a 60 s wait > 60 s
    assert queue.retries == []
    assert queue.finished == [("r1", "EventAgeExceeded")]
    assert [d for d, _ in sender.sent] == [DLQ, ON_FAILURE]


@pytest.mark.timeout(10)
async def test_reserved_concurrency_zero_gives_up_without_invoking() -> None:
    target = Target()
    queue, sender = await drain(target, event(), reserved=0, dlq=False)
    assert target.request_ids == []
    assert queue.finished == [("r1", "ZeroReservedConcurrency")]
    ((destination, record),) = sender.sent
    assert destination == ON_FAILURE
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert "responseContext" not in record or record["responseContext"].get("functionError") is None


@pytest.mark.timeout(10)
async def test_a_failed_delivery_is_retried_later_without_invoking_again() -> None:
    target = Target("error", "error", "error")
    queue, sender = await drain(target, event(), sender=Sender(refuse=2), dlq=False)
    assert target.request_ids == ["r1"] * 3, "the function ran three times, not more"
    assert len(queue.retries) == 4, "two function-error retries, then two delivery retries"
    assert queue.finished == [("r1", "RetriesExhausted")]
    assert [d for d, _ in sender.sent] == [ON_FAILURE]
