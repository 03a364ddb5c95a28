"""SqsMapping's rules against an in-memory queue twin: a partial batch response deletes everything
but the reported messages, a filter deletes what it drops without an invocation, and a function
error deletes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from typing import Any

import pytest

from broker.clock import SystemClock
from broker.config.models import EventSourceMapping
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.sources.sqs.mapping import SqsMapping, SqsSettings
from broker.types import InvokeContext, InvokeResult

ARN = "arn:aws:sqs:us-east-1:000000000000:twin"


class QueueTwin:
    """Enough of SQS for the mapping: receive (visibility), batch delete, batch visibility change."""

    def __init__(self, bodies: list[str]) -> None:
        self.visible = [{"MessageId": f"m{n}", "Body": b} for n, b in enumerate(bodies)]
        self.in_flight: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.returned: list[str] = []
        self._handles = itertools.count()

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        taken, self.visible = self.visible[:kwargs["MaxNumberOfMessages"]], self.visible[kwargs["MaxNumberOfMessages"]:]
        if not taken:
            await asyncio.sleep(0.01)
        out = []
        for message in taken:
            handle = f"h{next(self._handles)}"
            self.in_flight[handle] = message
            out.append({**message, "ReceiptHandle": handle, "Attributes": {"ApproximateReceiveCount": "1"},
                        "MD5OfBody": hashlib.md5(message["Body"].encode()).hexdigest()})
        return {"Messages": out}

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        for entry in kwargs["Entries"]:
            self.deleted.append(self.in_flight.pop(entry["ReceiptHandle"])["Body"])
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    async def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        for entry in kwargs["Entries"]:
            message = self.in_flight.pop(entry["ReceiptHandle"])
            self.returned.append(message["Body"])
            self.visible.append(message)
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}


class Target:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.batches: list[list[str]] = []

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        records = json.loads(payload)["Records"]
        self.batches.append([r["body"] for r in records])
        return self.answer(records)


def mapping(queue: QueueTwin, target: Target, **fields: Any) -> SqsMapping:
    esm = EventSourceMapping.model_validate({"UUID": "u", "FunctionName": "f", "EventSourceArn": ARN,
                                             "BatchSize": 10, **fields})
    metrics = Metrics()
    function = Function(name="f", arn="arn:aws:lambda:us-east-1:000000000000:function:f", timeout=5, invoker=target,
                        metrics=metrics, clock=SystemClock())
    return SqsMapping(esm=esm, function=function, sqs=queue, queue_url="https://twin", visibility_timeout=30,
                      region="us-east-1", settings=SqsSettings(wait_time_seconds=0, initial_pollers=1, min_pollers=1,
                                                               max_pollers=1, backoff_base_seconds=0.01,
                                                               backoff_max_seconds=0.01),
                      metrics=metrics, clock=SystemClock())


async def drain(m: SqsMapping, queue: QueueTwin, done: Any) -> None:
    task = asyncio.create_task(m.run())
    try:
        for _ in range(500):
            if done():
                break
            await asyncio.sleep(0.01)
    finally:
        m.stop()
        await task


@pytest.mark.timeout(10)
async def test_a_partial_response_deletes_all_but_the_reported_messages() -> None:
    queue = QueueTwin([f"bad-{n}" if n % 4 == 0 else f"good-{n}" for n in range(20)])

    def answer(records: list[dict[str, Any]]) -> InvokeResult:
        failed = [{"itemIdentifier": r["messageId"]} for r in records if r["body"].startswith("bad")]
        return InvokeResult(json.dumps({"batchItemFailures": failed}).encode())

    target = Target(answer)
    await drain(mapping(queue, target, FunctionResponseTypes=["ReportBatchItemFailures"]), queue,
                lambda: len(queue.deleted) >= 15)
    assert sorted(queue.deleted) == sorted(f"good-{n}" for n in range(20) if n % 4)
    assert sorted(m["Body"] for m in queue.in_flight.values()) == sorted(f"bad-{n}" for n in range(0, 20, 4))


@pytest.mark.timeout(10)
async def test_a_filter_deletes_what_it_drops_without_invoking() -> None:
    queue = QueueTwin([json.dumps({"type": "order" if n % 2 else "noise", "n": n}) for n in range(10)])
    target = Target(lambda records: InvokeResult(b"{}"))
    pattern = json.dumps({"body": {"type": ["order"]}})
    await drain(mapping(queue, target, FilterCriteria={"Filters": [{"Pattern": pattern}]}), queue,
                lambda: len(queue.deleted) >= 10)
    assert len(queue.deleted) == 10
    assert sorted(json.loads(b)["n"] for batch in target.batches for b in batch) == [1, 3, 5, 7, 9]


@pytest.mark.timeout(10)
async def test_a_function_error_deletes_nothing() -> None:
    queue = QueueTwin([f"m{n}" for n in range(5)])
    target = Target(lambda records: InvokeResult(b'{"errorType": "E", "errorMessage": "no"}', "Unhandled"))
    await drain(mapping(queue, target), queue, lambda: bool(target.batches))
    assert queue.deleted == []
    assert target.batches[0] == [f"m{n}" for n in range(5)]
