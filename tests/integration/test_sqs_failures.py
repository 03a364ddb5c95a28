"""SQS failure handling: partial batch responses, function errors to the DLQ, throttles, timeouts,
unreachable targets (docs/aws-semantics.md, "Partial batch responses", "SQS polling and deletion", "Errors, throttles and timeouts"; README.md, "functions:")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from broker.embedded import free_port
from broker.errors import StartupError
from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import Aws, Call, RecordingTarget, queue_arn

FAST = {"sqs_initial_pollers": 1, "sqs_min_pollers": 1}


def rbif(name: str, **extra: Any) -> dict[str, Any]:
    return {"FunctionName": "f", "EventSourceArn": queue_arn(name), "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BatchSize": 10, **extra}


def receive_count(record: dict[str, Any]) -> int:
    return int(record["attributes"]["ApproximateReceiveCount"])


async def test_partial_batch_response_keeps_only_reported(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Reported messages come back after the visibility timeout; the others are deleted."""
    url = await aws.create_queue("partial", VisibilityTimeout=2)
    await aws.send_batch(url, ["good1", "bad", "good2"])

    def answer(event: Any, call: Call) -> web.Response:
        failed = [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                  if r["body"] == "bad" and receive_count(r) == 1]
        return respond_json({"batchItemFailures": failed})

    target.responder = answer
    async with broker.run(function(target), [rbif("partial")], **FAST):
        await target.wait_for(lambda calls: any(r["body"] == "bad" and receive_count(r) == 2 for r in target.records()))
        await wait_until(lambda: _empty(aws, url))
    bodies = target.bodies()
    assert sorted(bodies) == ["bad", "bad", "good1", "good2"]


async def _empty(aws: Aws, url: str) -> bool:
    return await aws.depth(url) == (0, 0)


@pytest.mark.parametrize("response", [
    "not json",
    {"batchItemFailures": [{"itemIdentifier": ""}]},
    {"batchItemFailures": [{"itemIdentifier": None}]},
    {"batchItemFailures": [{"foo": "notvalid"}]},
    {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]},
])
async def test_malformed_partial_response_fails_whole_batch(aws: Aws, broker: BrokerRunner, target: RecordingTarget,
                                                            response: Any) -> None:
    """A malformed response deletes nothing: every message is delivered again."""
    url = await aws.create_queue("malformed", VisibilityTimeout=1)
    await aws.send_batch(url, ["a", "b"])

    def answer(event: Any, call: Call) -> web.Response:
        first = all(receive_count(r) == 1 for r in event["Records"])
        return respond_json(response if first else {})

    target.responder = answer
    async with broker.run(function(target, Timeout=1), [rbif("malformed")], **FAST):
        await target.wait_for(lambda calls: sorted(r["body"] for r in target.records() if receive_count(r) >= 2) == ["a", "b"])
        await wait_until(lambda: _empty(aws, url))
    assert sorted(r["body"] for r in target.records() if receive_count(r) == 1) == ["a", "b"]


@pytest.mark.parametrize("response", ["", "null", "{}", '{"batchItemFailures": []}', '{"batchItemFailures": null}', '""', "[]"])
async def test_empty_partial_response_is_full_success(aws: Aws, broker: BrokerRunner, target: RecordingTarget,
                                                      response: str) -> None:
    """Empty and null responses delete the whole batch on the first delivery."""
    url = await aws.create_queue("empty", VisibilityTimeout=1)
    await aws.send_batch(url, ["a", "b"])
    target.responder = lambda event, call: web.Response(status=200, text=response)
    async with broker.run(function(target, Timeout=1), [rbif("empty")], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        await wait_until(lambda: metric(app, "broker_deleted_events_total", function="f", mapping=uuid) >= 2)
        await asyncio.sleep(1.5)  # past the visibility timeout: nothing may come back
        assert await aws.depth(url) == (0, 0)
    assert sorted(target.bodies()) == ["a", "b"]


async def test_function_error_redelivers_then_dead_letters(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A failing batch is left to the visibility timeout; after maxReceiveCount the queue's DLQ has it."""
    dlq = await aws.create_queue("errors-dlq")
    policy = json.dumps({"deadLetterTargetArn": queue_arn("errors-dlq"), "maxReceiveCount": 2})
    url = await aws.create_queue("errors", VisibilityTimeout=1, RedrivePolicy=policy)
    await aws.send(url, "poison")
    target.responder = lambda event, call: respond_json({"errorMessage": "boom", "errorType": "ValueError"}, status=500)
    async with broker.run(function(target, Timeout=1), [{"FunctionName": "f", "EventSourceArn": queue_arn("errors")}], **FAST) as app:
        dead = await aws.drain(dlq, 1, timeout=20)
        uuid = app.config.event_source_mappings[0].UUID or ""
        assert metric(app, "broker_errors_total", function="f") >= 2
        assert metric(app, "broker_failed_invoke_events_total", function="f", mapping=uuid) >= 2
        assert metric(app, "broker_deleted_events_total", function="f", mapping=uuid) == 0
    assert [m["Body"] for m in dead] == ["poison"]
    assert [receive_count(r) for r in target.records()] == [1, 2]


async def test_runtime_emulator_error_body_is_a_function_error(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A 200 with Lambda's error object (the runtime interface emulator's way) is a function error."""
    url = await aws.create_queue("rie", VisibilityTimeout=1)
    await aws.send(url, "x")

    def answer(event: Any, call: Call) -> web.Response:
        if receive_count(event["Records"][0]) == 1:
            return respond_json({"errorMessage": "bad", "errorType": "Exception", "stackTrace": []})
        return respond_json("ok")

    target.responder = answer
    async with broker.run(function(target, Timeout=1), [{"FunctionName": "f", "EventSourceArn": queue_arn("rie")}], **FAST) as app:
        await target.wait_for(lambda calls: len(calls) >= 2)
        await wait_until(lambda: _empty(aws, url))
        assert metric(app, "broker_errors_total", function="f") == 1


async def test_function_error_header(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """X-Amz-Function-Error on a 2xx marks a function error."""
    url = await aws.create_queue("hdrerr", VisibilityTimeout=1)
    await aws.send(url, "x")
    target.responder = lambda event, call: respond_json({"e": 1}, headers={"X-Amz-Function-Error": "Handled"}) \
        if receive_count(event["Records"][0]) == 1 else respond_json({})
    async with broker.run(function(target, Timeout=1), [{"FunctionName": "f", "EventSourceArn": queue_arn("hdrerr")}], **FAST):
        await target.wait_for(lambda calls: len(calls) >= 2)
    assert [receive_count(r) for r in target.records()] == [1, 2]


async def test_timeout_is_a_function_error(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A target that runs past Timeout fails the batch; it comes back after the visibility timeout."""
    url = await aws.create_queue("slow", VisibilityTimeout=2)
    await aws.send(url, "x")

    async def answer(event: Any, call: Call) -> web.Response:
        if receive_count(event["Records"][0]) == 1:
            await asyncio.sleep(3)
        return respond_json({})

    target.responder = answer
    async with broker.run(function(target, Timeout=1), [{"FunctionName": "f", "EventSourceArn": queue_arn("slow")}], **FAST) as app:
        await target.wait_for(lambda calls: len(calls) >= 2)
        await wait_until(lambda: _empty(aws, url))
        assert metric(app, "broker_errors_total", function="f") == 1


async def test_throttle_retries_without_a_new_receive(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """429 and 503 are retried in place (receive count stays 1) and counted as throttles."""
    url = await aws.create_queue("throttled", VisibilityTimeout=10)
    await aws.send(url, "x")
    statuses = iter([429, 503])
    target.responder = lambda event, call: respond_json({}, status=next(statuses, 200))
    async with broker.run(function(target, Timeout=1), [{"FunctionName": "f", "EventSourceArn": queue_arn("throttled")}], **FAST) as app:
        await target.wait_for(lambda calls: len(calls) >= 3)
        await wait_until(lambda: _empty(aws, url))
        assert metric(app, "broker_throttles_total", function="f", reason="HTTP429") == 1
        assert metric(app, "broker_throttles_total", function="f", reason="HTTP503") == 1
        assert metric(app, "broker_invocations_total", function="f") == 1
    assert [receive_count(r) for r in target.records()] == [1, 1, 1]


async def test_unreachable_target_keeps_messages(aws: Aws, broker: BrokerRunner) -> None:
    """Connection refused is a system error: retried, never deleted, counted."""
    url = await aws.create_queue("refused", VisibilityTimeout=2)
    await aws.send(url, "x")
    functions = {"f": {"Target": {"Url": f"http://127.0.0.1:{free_port()}/invoke"}, "Timeout": 1}}
    async with broker.run(functions, [{"FunctionName": "f", "EventSourceArn": queue_arn("refused")}], **FAST) as app:
        await wait_until(lambda: metric(app, "broker_system_errors_total", function="f") >= 2)
        uuid = app.config.event_source_mappings[0].UUID or ""
        assert metric(app, "broker_deleted_events_total", function="f", mapping=uuid) == 0
    assert sum(await aws.depth(url)) == 1


async def test_timeout_above_visibility_refuses_to_start(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """The start-up check names both values."""
    await aws.create_queue("short", VisibilityTimeout=2)
    with pytest.raises(StartupError, match=r"Timeout \(5 s\) exceeds the visibility timeout \(2 s\)"):
        async with broker.run(function(target, Timeout=5), [{"FunctionName": "f", "EventSourceArn": queue_arn("short")}]):
            pass


async def test_missing_queue_refuses_to_start(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A mapping to a queue that does not exist fails start-up with AWS's sentence after the field's path."""
    with pytest.raises(StartupError, match=r"^event_source_mappings\[0\]\.EventSourceArn: Error occurred while "
                       r"ReceiveMessage\. SQS Error Code: AWS\.SimpleQueueService\.NonExistentQueue\. SQS Error "
                       r"Message: The specified queue does not exist\."):
        async with broker.run(function(target), [{"FunctionName": "f", "EventSourceArn": queue_arn("nope")}]):
            pass


async def test_every_item_reported_failed_deletes_nothing(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """All messages reported as failures: nothing is deleted, nothing errors, all come back."""
    url = await aws.create_queue("allfail", VisibilityTimeout=1)
    await aws.send_batch(url, ["a", "b"])

    def answer(event: Any, call: Call) -> web.Response:
        if all(receive_count(r) == 1 for r in event["Records"]):
            return respond_json({"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]})
        return respond_json({})

    target.responder = answer
    async with broker.run(function(target, Timeout=1), [rbif("allfail")], **FAST) as app:
        await target.wait_for(lambda calls: sorted(r["body"] for r in target.records() if receive_count(r) == 2) == ["a", "b"])
        await wait_until(lambda: _empty(aws, url))
        uuid = app.config.event_source_mappings[0].UUID or ""
        assert metric(app, "broker_deleted_events_total", function="f", mapping=uuid) == 2
