"""Trace context from every source to every target: an SQS message's AWSTraceHeader reaches an HTTP
target as traceparent and X-Amzn-Trace-Id of the same trace; an Event invoke's X-Amzn-Trace-Id
stays the same trace across a function error and its retry, and goes on to the DLQ message; an
awslambdaric handler sees it in _X_AMZN_TRACE_ID; stream records start a trace of their own."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import BrokerRunner
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import Aws, Call, RecordingTarget, create_stream, put_records, queue_arn, stream_arn

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
XRAY = f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1"
TRACE_ID = "5759e988bd862e3fe1be46a994272793"
FAST = {"async_retry_delays_seconds": [0.2, 0.2], "kinesis_poll_interval_seconds": 0.2,
        "kinesis_min_read_interval_seconds": 0.0}


def _trace_of(call: Call) -> tuple[str, str, str]:
    """(the traceparent's trace id, its parent id, X-Amzn-Trace-Id's Root) the target was given."""
    _, trace_id, parent, _ = call.headers["traceparent"].split("-")
    root = dict(p.split("=", 1) for p in call.headers["X-Amzn-Trace-Id"].split(";"))["Root"]
    return trace_id, parent, root


async def test_an_sqs_message_trace_reaches_the_target(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    url = await aws.create_queue("traced")
    await aws.call("sqs", "send_message", QueueUrl=url, MessageBody="hello",
                   MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": XRAY}})
    m = {"FunctionName": "f", "EventSourceArn": queue_arn("traced"), "BatchSize": 1}
    async with broker.run(function(target), [m]):
        await target.wait_for(lambda calls: len(calls) >= 1, timeout=20)
    call = target.calls[0]
    trace_id, parent, root = _trace_of(call)
    assert (trace_id, root) == (TRACE_ID, ROOT)
    assert parent != "53995c3f42cd8ad8", "the invocation is a new span of the message's trace"
    assert call.headers["traceparent"].endswith("-01"), "sampled as the header said"
    assert call.event["Records"][0]["attributes"]["AWSTraceHeader"] == XRAY, "the record keeps Lambda's attribute"


async def test_an_event_invoke_keeps_its_trace_through_retries_and_the_dlq(
        aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    dlq = await aws.create_queue("traced-dlq")
    target.responder = lambda event, call: respond_json({"errorMessage": "no", "errorType": "E"}, status=500)
    functions = function(target, DeadLetterConfig={"TargetArn": queue_arn("traced-dlq")},
                         EventInvokeConfig={"MaximumRetryAttempts": 1})
    async with broker.run(functions, [], **FAST) as app, aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations",
                             data=json.dumps({"n": 1}),
                             headers={"X-Amz-Invocation-Type": "Event", "X-Amzn-Trace-Id": XRAY}) as resp:
            assert resp.status == 202
        await target.wait_for(lambda calls: len(calls) >= 2, timeout=20)
        got = await aws.drain(dlq, 1, timeout=20)
    first, second = (_trace_of(c) for c in target.calls[:2])
    assert first[0] == second[0] == TRACE_ID, "the same trace on every attempt"
    assert first[1] != second[1], "each attempt its own span"
    (message,) = got
    assert message["Attributes"]["AWSTraceHeader"].startswith(f"Root={ROOT};"), "the DLQ message goes on with it"


async def test_a_handler_sees_the_trace_and_stream_records_start_one(
        aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    await create_stream(aws, "traced")
    await put_records(aws, "traced", [("k", b'{"n": 1}')])
    functions = {**function(target),
                 "env": {"Target": {"Handler": "tests.handlers.behaviours:handler"}, "Timeout": 10}}
    m = {"FunctionName": "f", "EventSourceArn": stream_arn("traced"), "StartingPosition": "TRIM_HORIZON"}
    async with broker.run(functions, [m], **FAST) as app, aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/env/invocations",
                             data=json.dumps({"id": 1}), headers={"traceparent": f"00-{TRACE_ID}-53995c3f42cd8ad8-01"},
                             timeout=aiohttp.ClientTimeout(total=60)) as resp:
            answer: dict[str, Any] = await resp.json()
        await target.wait_for(lambda calls: len(calls) >= 1, timeout=20)
    assert answer["trace"].startswith(f"Root={ROOT};Parent="), answer
    assert answer["trace"].endswith(";Sampled=1")
    trace_id, _, root = _trace_of(target.calls[0])
    assert root == f"1-{trace_id[:8]}-{trace_id[8:]}", "a stream record's invocation starts its own trace"
    assert trace_id != TRACE_ID


async def test_a_bad_trace_header_is_ignored(broker: BrokerRunner, target: RecordingTarget) -> None:
    async with broker.run(function(target), []) as app, aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations", data="{}",
            headers={"X-Amzn-Trace-Id": "Root=garbage", "traceparent": "nope"}) as resp:
        assert resp.status == 200
    await wait_until(lambda: bool(target.calls))
    trace_id, _, _ = _trace_of(target.calls[0])
    assert len(trace_id) == 32
    assert trace_id != TRACE_ID



async def test_a_lambda_target_gets_the_trace_on_its_invoke(broker: BrokerRunner, target: RecordingTarget) -> None:
    """A Lambda target (here this broker's own Invoke API, as another broker would be) receives
    X-Amzn-Trace-Id on the Invoke call: the function behind it sees the same trace."""
    async with broker.run(function(target), []) as inner:
        outer_functions = {"g": {"Target": {"Lambda": "arn:aws:lambda:us-east-1:000000000000:function:f",
                                            "EndpointUrl": f"http://127.0.0.1:{inner.api_port}"}}}
        outer_runner = BrokerRunner(broker._redis, broker._moto, broker._tmp / "outer")
        (broker._tmp / "outer").mkdir()
        async with outer_runner.run(outer_functions, []) as outer, aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{outer.api_port}/2015-03-31/functions/g/invocations", data="{}",
                headers={"X-Amzn-Trace-Id": XRAY}) as resp:
            assert resp.status == 200, await resp.text()
    trace_id, _, root = _trace_of(target.calls[0])
    assert (trace_id, root) == (TRACE_ID, ROOT)
