"""The stream rules that decide a batch's fate, on a virtual clock: retries spent only on function
errors, bisection, partial batch responses, record age, and what reaches the on-failure destination."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broker.clock import SystemClock
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.sources.streams.batch_resolver import BatchResolver
from broker.sources.streams.shard_state import ShardActivity
from broker.sources.streams.types import Lane, StreamMappingSpec, StreamSettings
from broker.types import InvokeContext, InvokeResult, SourceKind, StreamRecord
from tests.unit.virtual_clock import VirtualClock

DESTINATION = "arn:aws:sqs:us-east-1:000000000000:failed"


class Target:
    """Fails every invocation whose batch holds a record in ``bad``; or answers ``responses`` in turn."""

    def __init__(self, bad: set[str] = frozenset(), responses: list[bytes] | None = None) -> None:  # type: ignore[assignment]
        self.bad = bad
        self.responses = list(responses or [])
        self.batches: list[list[str]] = []

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        sequences = [r["kinesis"]["sequenceNumber"] for r in json.loads(payload)["Records"]]
        self.batches.append(sequences)
        if self.bad & set(sequences):
            return InvokeResult(b'{"errorType": "ValueError", "errorMessage": "bad"}', "Unhandled")
        return InvokeResult(self.responses.pop(0) if self.responses else b"{}")


class Sender:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.traces: list[str] = []

    async def deliver(self, destination: str, document: dict[str, Any], *, s3_key: str | None = None,
                      trace: str = "") -> None:
        self.records.append(document)
        self.traces.append(trace)


class Service:
    kind = SourceKind.KINESIS
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


class Shard:
    """The shard the resolver works for: sleeps on the virtual clock, records what is handed back."""

    shard_id = "shardId-000000000000"

    def __init__(self, clock: VirtualClock, handled: list[str]) -> None:
        self.stopped = asyncio.Event()
        self.activity = ShardActivity()
        self._clock = clock
        self._handled = handled
        self.lease_lost = False

    async def sleep(self, seconds: float) -> bool:
        await self._clock.sleep(seconds)
        return True

    async def handled(self, records: list[StreamRecord], lane: Lane) -> None:
        self._handled.extend(r.sequence for r in records)

    def lose_lease(self) -> None:
        self.lease_lost = True


def _record(seq: str, arrival: float) -> StreamRecord:
    record = {"kinesis": {"sequenceNumber": seq, "partitionKey": "k", "data": ""}}
    return StreamRecord(seq, "k", arrival, record, json.dumps(record).encode())


def resolver(target: Target, clock: VirtualClock, sender: Sender, handled: list[str], **rules: Any) -> BatchResolver:
    spec = StreamMappingSpec(**{"uuid": "u", "batch_size": 10, "window_seconds": 0, "parallelization": 1,
                                "max_retry_attempts": -1, "max_record_age_seconds": -1, "bisect": False,
                                "report_batch_item_failures": False, "destination": DESTINATION,
                                "starting_position": "TRIM_HORIZON", "starting_timestamp": None, "filter": None,
                                **rules})
    metrics = Metrics()
    function = Function(name="f", arn="arn:aws:lambda:us-east-1:000000000000:function:f", timeout=5, invoker=target,
                        metrics=metrics, clock=SystemClock())

    return BatchResolver(Shard(clock, handled), service=Service(), spec=spec,  # type: ignore[arg-type]
                         function=function, sender=sender, metrics=metrics, clock=clock,  # type: ignore[arg-type]
                         settings=StreamSettings(backoff_base_seconds=1, backoff_max_seconds=60),
                         on_result=lambda result: None)


def batch(clock: VirtualClock, *sequences: str, age: float = 1.0) -> list[StreamRecord]:
    return [_record(s, clock.now - age) for s in sequences]


@pytest.mark.timeout(5)
async def test_retries_are_spent_on_function_errors_then_the_batch_is_given_up() -> None:
    clock, sender, handled = VirtualClock(), Sender(), []
    target = Target(bad={"1"})
    await resolver(target, clock, sender, handled, max_retry_attempts=2).resolve(batch(clock, "1", "2"), Lane())
    assert target.batches == [["1", "2"]] * 3, "MaximumRetryAttempts 2: three invocations"
    (record,) = sender.records
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["KinesisBatchInfo"]["batchSize"] == 2
    assert handled == ["1", "2"], "given up records pass the checkpoint"
    (trace,) = sender.traces
    assert trace.startswith("Root=1-"), "the failure record goes on in the batch's trace"


@pytest.mark.timeout(5)
async def test_bisection_isolates_the_bad_record_without_spending_attempts() -> None:
    clock, sender, handled = VirtualClock(), Sender(), []
    target = Target(bad={"3"})
    await resolver(target, clock, sender, handled, bisect=True, max_retry_attempts=0).resolve(
        batch(clock, "1", "2", "3", "4"), Lane())
    assert target.batches == [["1", "2", "3", "4"], ["1", "2"], ["3", "4"], ["3"], ["4"]]
    assert [r["KinesisBatchInfo"]["startSequenceNumber"] for r in sender.records] == ["3"]
    assert handled == ["1", "2", "3", "4"]


@pytest.mark.timeout(5)
async def test_a_partial_response_resumes_from_the_lowest_reported_record() -> None:
    clock, sender, handled = VirtualClock(), Sender(), []
    target = Target(responses=[json.dumps({"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]
                                           }).encode(), b"{}"])
    await resolver(target, clock, sender, handled, report_batch_item_failures=True).resolve(
        batch(clock, "1", "2", "3"), Lane())
    assert target.batches == [["1", "2", "3"], ["2", "3"]]
    assert handled == ["1", "2", "3"]
    assert sender.records == []


@pytest.mark.timeout(5)
async def test_records_too_old_when_read_are_given_up_uninvoked_as_one_invocation() -> None:
    clock, sender, handled = VirtualClock(), Sender(), []
    target = Target()
    records = batch(clock, "1", "2", age=120) + batch(clock, "3", age=1)
    await resolver(target, clock, sender, handled, max_record_age_seconds=60).resolve(records, Lane())
    (record,) = sender.records
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert "responseContext" not in record
    assert record["KinesisBatchInfo"]["batchSize"] == 2
    assert target.batches == [["3"]], "the fresh record of the same read is delivered"
    assert handled == ["1", "2", "3"]


@pytest.mark.timeout(5)
async def test_retries_back_off_on_the_clock() -> None:
    """Function errors wait between attempts (exponential with jitter), on the injected clock only."""
    clock, sender, handled = VirtualClock(), Sender(), []
    started = clock.now
    await resolver(Target(bad={"1"}), clock, sender, handled, max_retry_attempts=3).resolve(batch(clock, "1"), Lane())
    waited = clock.now - started
    assert 0.5 + 1 + 2 <= waited <= 1 + 2 + 4, waited  # three backoffs of 1, 2 and 4 s, each in its upper half
