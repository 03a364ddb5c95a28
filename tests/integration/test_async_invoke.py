"""Lambda's Invoke API and asynchronous invocation, driven through boto3's Lambda client pointed at
the broker (docs/aws-semantics.md, "Invoke", "Concurrency"): sync results and errors, 202 into the durable queue, every destination
condition, DLQ attributes, the EventBridge envelope."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from botocore.config import Config

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import respond_json, wait_until
from tests.servers import ACCOUNT, REGION, Aws, Call, RecordingTarget, queue_arn

FAST = {"async_retry_delays_seconds": [0.2, 0.4], "retry_backoff_base_seconds": 0.05, "retry_backoff_max_seconds": 0.2}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def lambda_client(app: Any, *, parameter_validation: bool = True) -> Any:
    client = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{app.api_port}", region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 0}, parameter_validation=parameter_validation))
    _clients.append(client)
    return client


async def invoke(client: Any, **kwargs: Any) -> Any:
    """Invoke and read the payload at once (an unread body keeps its connection checked out)."""
    def run() -> Any:
        response = client.invoke(**kwargs)
        response["Payload"] = io.BytesIO(response["Payload"].read())
        return response
    return await asyncio.to_thread(run)


def fn(target: RecordingTarget, **extra: Any) -> dict[str, Any]:
    return {"f": {"Target": {"Url": target.url}, "Timeout": 2, **extra}}


def failing(event: Any, call: Call) -> web.Response:
    return respond_json({"errorMessage": "it broke", "errorType": "ValueError"}, status=500)


async def test_sync_invoke_result_and_function_error(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """RequestResponse: 200 with the result; a function error keeps 200 and sets FunctionError."""
    target.responder = lambda event, call: respond_json({"echo": event}) if event.get("ok") else failing(event, call)
    async with broker.run(fn(target), [], **FAST) as app:
        client = lambda_client(app)
        ok = await invoke(client, FunctionName="f", Payload=json.dumps({"ok": True}))
        bad = await invoke(client, FunctionName=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f", Payload=b"{}")
    assert ok["StatusCode"] == 200
    assert ok["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"echo": {"ok": True}}
    assert bad["StatusCode"] == 200
    assert bad["FunctionError"] == "Unhandled"
    assert json.loads(bad["Payload"].read()) == {"errorMessage": "it broke", "errorType": "ValueError"}


async def test_sync_invoke_past_timeout(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """A target that answers late, or sends its headers and then the body late, is a function error
    with Lambda's Sandbox.Timedout body after the function's Timeout."""
    async def late(event: Any, call: Call) -> web.StreamResponse:
        if event["how"] == "headers":
            await asyncio.sleep(3)
            return respond_json({})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        assert call.request is not None
        await response.prepare(call.request)
        await response.write(b'{"partial":')
        await asyncio.sleep(3)
        await response.write(b" 1}")
        return response

    target.responder = late
    async with broker.run(fn(target, Timeout=1), [], **FAST) as app:
        client = lambda_client(app)
        for how in ("headers", "body"):
            started = asyncio.get_running_loop().time()
            result = await invoke(client, FunctionName="f", Payload=json.dumps({"how": how}))
            took = asyncio.get_running_loop().time() - started
            assert result["FunctionError"] == "Unhandled", how
            body = json.loads(result["Payload"].read())
            assert body["errorType"] == "Sandbox.Timedout", how
            assert body["errorMessage"].endswith("Task timed out after 1.00 seconds"), how
            assert 0.9 < took < 2.5, (how, took)


async def test_invoke_errors(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """Unknown function 404, non-JSON 400, too large 413, DryRun 204, reserved 0 is 429 with Reason."""
    functions = {**fn(target), "off": {"Target": {"Url": target.url}, "ReservedConcurrentExecutions": 0}}
    async with broker.run(functions, [], **FAST) as app:
        client = lambda_client(app)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await invoke(client, FunctionName="nope", Payload=b"{}")
        with pytest.raises(client.exceptions.InvalidRequestContentException):
            await invoke(client, FunctionName="f", Payload=b"not json")
        with pytest.raises(client.exceptions.RequestTooLargeException):
            await invoke(client, FunctionName="f", InvocationType="Event", Payload=json.dumps({"x": "y" * 1_100_000}))
        dry = await invoke(client, FunctionName="f", InvocationType="DryRun", Payload=b"{}")
        assert dry["StatusCode"] == 204
        with pytest.raises(client.exceptions.TooManyRequestsException) as info:
            await invoke(client, FunctionName="off", Payload=b"{}")
        assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        assert info.value.response["Error"]["Message"] == "Rate Exceeded."
    assert target.calls == []


async def test_event_success_goes_to_on_success(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """Event: 202 at once, then the target runs and the Success record reaches OnSuccess."""
    ok_queue = await aws.create_queue("ok")
    target.responder = lambda event, call: respond_json({"done": event["n"]})
    functions = fn(target, EventInvokeConfig={"DestinationConfig": {"OnSuccess": {"Destination": queue_arn("ok")}}})
    async with broker.run(functions, [], **FAST) as app:
        accepted = await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=json.dumps({"n": 7}))
        messages = await aws.drain(ok_queue, 1)
        assert metric(app, "broker_async_events_received_total", function="f") == 1
    assert accepted["StatusCode"] == 202
    assert accepted["Payload"].read() == b""
    record = json.loads(messages[0]["Body"])
    assert list(record) == ["version", "timestamp", "requestContext", "requestPayload", "responseContext", "responsePayload"]
    assert record["version"] == "1.0"
    assert ISO_MS.match(record["timestamp"])
    assert record["requestContext"] == {"requestId": accepted["ResponseMetadata"]["RequestId"],
                                        "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f:$LATEST",
                                        "condition": "Success", "approximateInvokeCount": 1}
    assert record["requestPayload"] == {"n": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"done": 7}
    assert target.calls[0].headers["Lambda-Runtime-Aws-Request-Id"] == accepted["ResponseMetadata"]["RequestId"]


async def test_retries_exhausted_to_on_failure_and_dlq(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """MaximumRetryAttempts 1: two runs with the same request id, then the DLQ (with attributes) and OnFailure."""
    failed = await aws.create_queue("failed")
    dlq = await aws.create_queue("dlq")
    target.responder = failing
    functions = fn(target, DeadLetterConfig={"TargetArn": queue_arn("dlq")}, EventInvokeConfig={
        "MaximumRetryAttempts": 1, "DestinationConfig": {"OnFailure": {"Destination": queue_arn("failed")}}})
    async with broker.run(functions, [], **FAST) as app:
        accepted = await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=b'{"n": 1}')
        records = await aws.drain(failed, 1)
        dead = await aws.drain(dlq, 1)
        assert metric(app, "broker_async_events_dropped_total", function="f", reason="RetriesExhausted") == 1
    request_id = accepted["ResponseMetadata"]["RequestId"]
    assert [c.headers["Lambda-Runtime-Aws-Request-Id"] for c in target.calls] == [request_id, request_id]
    record = json.loads(records[0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"] == {"errorMessage": "it broke", "errorType": "ValueError"}
    assert dead[0]["Body"] == '{"n": 1}'
    attrs = dead[0]["MessageAttributes"]
    assert attrs["RequestID"] == {"StringValue": request_id, "DataType": "String"}
    assert attrs["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert attrs["ErrorMessage"] == {"StringValue": "it broke", "DataType": "String"}


async def test_event_age_look_ahead(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """Age limit 60 s with 60 s retry waits: the retry would come too late, so EventAgeExceeded after one run."""
    failed = await aws.create_queue("aged")
    target.responder = failing
    functions = fn(target, EventInvokeConfig={"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 60,
                                              "DestinationConfig": {"OnFailure": {"Destination": queue_arn("aged")}}})
    async with broker.run(functions, [], **{**FAST, "async_retry_delays_seconds": [60, 120]}) as app:
        await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=b"{}")
        records = await aws.drain(failed, 1)
    record = json.loads(records[0]["Body"])
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert len(target.calls) == 1


async def test_zero_reserved_concurrency(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """Reserved concurrency 0: straight to OnFailure, no run, no responseContext."""
    failed = await aws.create_queue("zero")
    functions = fn(target, ReservedConcurrentExecutions=0,
                   EventInvokeConfig={"DestinationConfig": {"OnFailure": {"Destination": queue_arn("zero")}}})
    async with broker.run(functions, [], **FAST) as app:
        await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=b'{"a": 1}')
        records = await aws.drain(failed, 1)
    record = json.loads(records[0]["Body"])
    assert list(record) == ["version", "timestamp", "requestContext", "requestPayload"]
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert target.calls == []


async def test_throttles_spend_no_attempts(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """429s are retried with backoff without using MaximumRetryAttempts (0 here)."""
    ok_queue = await aws.create_queue("eventually")
    statuses = iter([429, 429, 503])
    target.responder = lambda event, call: respond_json({}, status=next(statuses, 200))
    functions = fn(target, EventInvokeConfig={"MaximumRetryAttempts": 0,
                                              "DestinationConfig": {"OnSuccess": {"Destination": queue_arn("eventually")}}})
    async with broker.run(functions, [], **FAST) as app:
        await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=b"{}")
        records = await aws.drain(ok_queue, 1)
    assert json.loads(records[0]["Body"])["requestContext"]["condition"] == "Success"
    assert len(target.calls) == 4


async def test_eventbridge_envelope(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """An EventBridge destination gets source "lambda" and Lambda's detail-type, the record as detail."""
    inbox = await aws.create_queue("bus-inbox")
    bus = (await aws.call("events", "create_event_bus", Name="results"))["EventBusArn"]
    await aws.call("events", "put_rule", Name="all", EventBusName="results", EventPattern=json.dumps({"source": ["lambda"]}))
    await aws.call("events", "put_targets", Rule="all", EventBusName="results",
                   Targets=[{"Id": "q", "Arn": queue_arn("bus-inbox")}])
    functions = fn(target, EventInvokeConfig={"DestinationConfig": {"OnSuccess": {"Destination": bus}}})
    async with broker.run(functions, [], **FAST) as app:
        await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=b'{"k": 1}')
        messages = await aws.drain(inbox, 1)
    envelope = json.loads(messages[0]["Body"])
    assert envelope["source"] == "lambda"
    assert envelope["detail-type"] == "Lambda Function Invocation Result - Success"
    assert envelope["detail"]["requestContext"]["condition"] == "Success"
    assert envelope["detail"]["requestPayload"] == {"k": 1}


async def test_lambda_destination_to_own_function(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """A Lambda destination naming one of this broker's functions gets the record as its event."""
    functions = {
        "f": {"Target": {"Url": target.url}, "EventInvokeConfig": {"DestinationConfig": {"OnSuccess": {
            "Destination": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sink"}}}},
        "sink": {"Target": {"Url": target.url}},
    }
    async with broker.run(functions, [], **FAST) as app:
        await invoke(lambda_client(app), FunctionName="f", InvocationType="Event", Payload=b'{"hop": 1}')
        calls = await target.wait_for(lambda calls: len(calls) >= 2)
    assert calls[1].event["requestContext"]["condition"] == "Success"
    assert calls[1].event["requestPayload"] == {"hop": 1}


async def test_lambda_target_through_another_broker(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """The Lambda target kind calls any Lambda-compatible endpoint: here, this broker's own Invoke API."""
    async with broker.run(fn(target), [], **FAST) as inner:
        target.responder = lambda event, call: respond_json({"inner": event})
        outer_functions = {"g": {"Target": {"Lambda": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f",
                                            "EndpointUrl": f"http://127.0.0.1:{inner.api_port}"}}}
        outer_runner = BrokerRunner(broker._redis, broker._moto, broker._tmp / "outer")
        (broker._tmp / "outer").mkdir()
        async with outer_runner.run(outer_functions, [], **FAST) as outer:
            result = await invoke(lambda_client(outer), FunctionName="g", Payload=b'{"via": "outer"}')
    assert json.loads(result["Payload"].read()) == {"inner": {"via": "outer"}}


async def test_burst_of_events_all_delivered(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    """10,000 Event invokes in a burst are all accepted (202) and all delivered, each exactly once.
    The function has time to answer: the target shares this process with the broker and the burst,
    and an invocation that outlives its Timeout is retried as Lambda retries it (delivered twice)."""
    async with broker.run(fn(target, Timeout=30), [], **FAST) as app:
        url = f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations"
        async with aiohttp.ClientSession() as http:
            async def one(i: int) -> int:
                async with http.post(url, data=json.dumps({"i": i}), headers={"X-Amz-Invocation-Type": "Event"}) as r:
                    return r.status
            statuses = await asyncio.gather(*(one(i) for i in range(10_000)))
        assert set(statuses) == {202}
        await wait_until(lambda: len(target.calls) >= 10_000, timeout=120)
        await wait_until(lambda: _depth_zero(app), timeout=10)
    assert sorted(c.event["i"] for c in target.calls) == list(range(10_000))


async def _depth_zero(app: Any) -> bool:
    return sum([await q.depth() for q in app.queues.values()]) == 0


async def test_event_queued_by_an_earlier_version_is_delivered(broker: BrokerRunner, target: RecordingTarget,
                                                               redis_server: Any) -> None:
    """Events accepted before an upgrade (stored as one JSON document) are delivered after it."""
    request_id = "0d6e2b9a-5f1c-4a57-9a1e-4b8f3d2c1a00"
    document = {"id": request_id, "payload": json.dumps({"queued": "before"}), "enqueued_ms": 0, "attempts": 0,
                "invokes": 0, "throttles": 0, "last": None, "outcome": None}
    client = aioredis.from_url(redis_server.url)
    await client.xadd("{broker:fn:f}:events", {"e": json.dumps(document)})
    await client.aclose()
    async with broker.run(fn(target), [], **FAST):
        calls = await target.wait_for(lambda calls: len(calls) >= 1)
    assert calls[0].event == {"queued": "before"}
    assert calls[0].headers["Lambda-Runtime-Aws-Request-Id"] == request_id

