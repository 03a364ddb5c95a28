"""Stream error rules and on-failure destination records, field by field (docs/aws-semantics.md, "Mapping parameters", "Partial batch responses", "Errors, throttles and timeouts", "On-failure records of stream mappings")."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from aiohttp import web

from broker.clock import SystemClock
from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import ACCOUNT, REGION, Aws, Call, RecordingTarget, create_stream, put_records, queue_arn, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def mapping(name: str, **extra: Any) -> dict[str, Any]:
    return {"FunctionName": "f", "EventSourceArn": stream_arn(name), "StartingPosition": "TRIM_HORIZON", **extra}


def numbers(event: dict[str, Any]) -> list[int]:
    return [json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event["Records"]]


def fail_if(predicate: Any) -> Any:
    def answer(event: Any, call: Call) -> web.Response:
        if predicate(numbers(event)):
            return respond_json({"errorMessage": "boom", "errorType": "ValueError"}, status=500)
        return respond_json({})
    return answer


async def test_retries_exhausted_goes_to_sqs_destination(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """MaximumRetryAttempts 1: two invocations, then the exact docs/aws-semantics.md, "On-failure records of stream mappings" record, then the stream moves on."""
    dlq = await aws.create_queue("clicks-failed")
    shard = (await create_stream(aws, "errs"))[0]
    seqs = await put_records(aws, "errs", [("k", json.dumps({"n": i}).encode()) for i in range(3)])
    target.responder = fail_if(lambda ns: 0 in ns)
    m = mapping("errs", BatchSize=3, MaximumRetryAttempts=1,
                DestinationConfig={"OnFailure": {"Destination": queue_arn("clicks-failed")}})
    async with broker.run(function(target), [m], **FAST) as app:
        messages = await aws.drain(dlq, 1)
        await put_records(aws, "errs", [("k", json.dumps({"n": 9}).encode())])
        await target.wait_for(lambda calls: any(numbers(c.event) == [9] for c in calls))
        uuid = app.config.event_source_mappings[0].UUID or ""
        assert metric(app, "broker_on_failure_destination_delivered_events_total", function="f", mapping=uuid) == 3
    doc = json.loads(messages[0]["Body"])
    assert list(doc) == ["requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"]
    assert doc["requestContext"]["functionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f"
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert doc["requestContext"]["approximateInvokeCount"] == 2
    assert doc["requestContext"]["requestId"] == target.calls[1].headers["Lambda-Runtime-Aws-Request-Id"]
    assert doc["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert doc["version"] == "1.0"
    assert ISO_MS.match(doc["timestamp"])
    info = doc["KinesisBatchInfo"]
    assert list(info) == ["shardId", "startSequenceNumber", "endSequenceNumber", "approximateArrivalOfFirstRecord",
                          "approximateArrivalOfLastRecord", "batchSize", "streamArn"]
    assert info["shardId"] == shard
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (seqs[0], seqs[2])
    assert ISO_MS.match(info["approximateArrivalOfFirstRecord"])
    assert ISO_MS.match(info["approximateArrivalOfLastRecord"])
    assert info["batchSize"] == 3
    assert info["streamArn"] == stream_arn("errs")
    assert [numbers(c.event) for c in target.calls[:2]] == [[0, 1, 2], [0, 1, 2]]


async def test_bisect_isolates_one_poison_record_in_100(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Bisecting spends no attempts; the poison record ends up alone at the destination; the other 99 succeed."""
    dlq = await aws.create_queue("poison")
    await create_stream(aws, "bisect")
    seqs = await put_records(aws, "bisect", [("k", json.dumps({"n": i}).encode()) for i in range(100)])
    target.responder = fail_if(lambda ns: 37 in ns)
    m = mapping("bisect", BatchSize=100, MaximumBatchingWindowInSeconds=1, BisectBatchOnFunctionError=True,
                MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": queue_arn("poison")}})
    async with broker.run(function(target), [m], **FAST):
        messages = await aws.drain(dlq, 1, timeout=30)
        await wait_until(lambda: len({n for c in target.calls if 37 not in numbers(c.event)
                                      for n in numbers(c.event)}) == 99)
    info = json.loads(messages[0]["Body"])["KinesisBatchInfo"]
    assert (info["batchSize"], info["startSequenceNumber"], info["endSequenceNumber"]) == (1, seqs[37], seqs[37])
    assert json.loads(messages[0]["Body"])["requestContext"]["approximateInvokeCount"] == 1
    assert 37 in numbers(target.calls[0].event)
    assert len(target.calls[0].event["Records"]) > 1
    succeeded = [n for c in target.calls if 37 not in numbers(c.event) for n in numbers(c.event)]
    assert sorted(succeeded) == [n for n in range(100) if n != 37]


async def test_partial_response_resumes_from_lowest_reported(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """ReportBatchItemFailures: the retry starts at the lowest reported sequence number."""
    await create_stream(aws, "partial")
    seqs = await put_records(aws, "partial", [("k", json.dumps({"n": i}).encode()) for i in range(6)])
    first = {"done": False}

    def answer(event: Any, call: Call) -> web.Response:
        if not first["done"]:
            first["done"] = True
            return respond_json({"batchItemFailures": [{"itemIdentifier": seqs[4]}, {"itemIdentifier": seqs[2]}]})
        return respond_json({"batchItemFailures": []})

    target.responder = answer
    m = mapping("partial", BatchSize=6, MaximumBatchingWindowInSeconds=1, FunctionResponseTypes=["ReportBatchItemFailures"])
    async with broker.run(function(target), [m], **FAST):
        await target.wait_for(lambda calls: len(calls) >= 2)
    assert [numbers(c.event) for c in target.calls[:2]] == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5]]


async def test_malformed_partial_response_fails_the_whole_batch(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """An identifier that is not in the batch makes the whole batch fail and be retried."""
    await create_stream(aws, "malformed")
    await put_records(aws, "malformed", [("k", json.dumps({"n": i}).encode()) for i in range(3)])
    answers = iter([{"batchItemFailures": [{"itemIdentifier": "123"}]}, {}])
    target.responder = lambda event, call: respond_json(next(answers, {}))
    m = mapping("malformed", BatchSize=3, MaximumBatchingWindowInSeconds=1, FunctionResponseTypes=["ReportBatchItemFailures"])
    async with broker.run(function(target), [m], **FAST):
        await target.wait_for(lambda calls: len(calls) >= 2)
    assert [numbers(c.event) for c in target.calls[:2]] == [[0, 1, 2], [0, 1, 2]]


async def test_only_reported_items_failed_gives_null_function_error(aws: Aws, broker: BrokerRunner,
                                                                     target: RecordingTarget) -> None:
    """When the function succeeded but kept reporting items, the record says functionError null."""
    dlq = await aws.create_queue("items-failed")
    await create_stream(aws, "items")
    seqs = await put_records(aws, "items", [("k", json.dumps({"n": i}).encode()) for i in range(2)])
    target.responder = lambda event, call: respond_json({"batchItemFailures": [{"itemIdentifier": seqs[1]}]})
    m = mapping("items", BatchSize=2, MaximumBatchingWindowInSeconds=1, MaximumRetryAttempts=1,
                FunctionResponseTypes=["ReportBatchItemFailures"],
                DestinationConfig={"OnFailure": {"Destination": queue_arn("items-failed")}})
    async with broker.run(function(target), [m], **FAST):
        messages = await aws.drain(dlq, 1)
    doc = json.loads(messages[0]["Body"])
    assert doc["responseContext"]["functionError"] is None
    assert doc["KinesisBatchInfo"]["batchSize"] == 1
    assert doc["KinesisBatchInfo"]["startSequenceNumber"] == seqs[1]


class AheadClock(SystemClock):
    """The broker's wall clock runs two minutes ahead: every record looks two minutes old."""

    def time(self) -> float:
        return super().time() + 120


async def test_record_age_exceeded_has_no_response_context(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Records older than MaximumRecordAgeInSeconds are given up without an invocation."""
    dlq = await aws.create_queue("old")
    await create_stream(aws, "aged")
    await put_records(aws, "aged", [("k", json.dumps({"n": i}).encode()) for i in range(2)])
    m = mapping("aged", MaximumRecordAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": queue_arn("old")}})
    async with broker.run(function(target), [m], clock=AheadClock(), **FAST):
        messages = await aws.drain(dlq, 1)
    doc = json.loads(messages[0]["Body"])
    assert list(doc) == ["requestContext", "version", "timestamp", "KinesisBatchInfo"]
    assert doc["requestContext"]["condition"] == "RecordAgeExceeded"
    assert doc["requestContext"]["approximateInvokeCount"] == 1  # never invoked, yet AWS counts 1
    assert target.calls == []


async def test_s3_destination_has_payload_and_key_layout(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """S3: the same record plus the original event as a nested payload, under aws/lambda/<UUID>/<shard>/..."""
    await aws.call("s3", "create_bucket", Bucket="stream-failures")
    shard = (await create_stream(aws, "tos3"))[0]
    await put_records(aws, "tos3", [("k", json.dumps({"n": 1}).encode())])
    target.responder = fail_if(lambda ns: True)
    m = mapping("tos3", MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": "arn:aws:s3:::stream-failures"}})
    async with broker.run(function(target), [m], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID
        await wait_until(lambda: _objects(aws, "stream-failures"))
        keys = await _objects(aws, "stream-failures")
    assert re.match(rf"^aws/lambda/{uuid}/{shard}/\d{{4}}/\d\d/\d\d/\d{{4}}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{{36}}$", keys[0])
    body = json.loads((await aws.call("s3", "get_object", Bucket="stream-failures", Key=keys[0]))["Body"].read())
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["payload"] == target.calls[0].event


async def _objects(aws: Aws, bucket: str) -> list[str]:
    listed = await aws.call("s3", "list_objects_v2", Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


async def test_sns_destination(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """SNS: the record is the Message."""
    topic = (await aws.call("sns", "create_topic", Name="stream-failures"))["TopicArn"]
    inbox = await aws.create_queue("sns-inbox")
    await aws.call("sns", "subscribe", TopicArn=topic, Protocol="sqs", Endpoint=queue_arn("sns-inbox"),
                   Attributes={"RawMessageDelivery": "true"})
    await create_stream(aws, "tosns")
    await put_records(aws, "tosns", [("k", json.dumps({"n": 1}).encode())])
    target.responder = fail_if(lambda ns: True)
    m = mapping("tosns", MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": topic}})
    async with broker.run(function(target), [m], **FAST):
        messages = await aws.drain(inbox, 1)
    assert json.loads(messages[0]["Body"])["requestContext"]["condition"] == "RetryAttemptsExhausted"


async def test_undeliverable_destination_holds_the_checkpoint(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """If the failure record cannot be delivered, delivery is retried and counted, and the checkpoint waits."""
    await create_stream(aws, "nodest")
    await put_records(aws, "nodest", [("k", json.dumps({"n": 1}).encode())])
    target.responder = fail_if(lambda ns: True)
    m = mapping("nodest", MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": queue_arn("missing")}})
    async with broker.run(function(target), [m], **FAST) as app:
        await wait_until(lambda: metric(app, "broker_destination_delivery_failures_total", function="f") >= 2)
        uuid = app.config.event_source_mappings[0].UUID
        assert await app.redis.hgetall(f"{{broker:esm:{uuid}}}:checkpoints") == {}
        await aws.create_queue("missing")
        messages = await aws.drain(f"{aws.endpoint}/{ACCOUNT}/missing", 1)
        await wait_until(lambda: _has_checkpoint(app, uuid or ""))
    assert json.loads(messages[0]["Body"])["requestContext"]["condition"] == "RetryAttemptsExhausted"


async def _has_checkpoint(app: Any, uuid: str) -> bool:
    return bool(await app.redis.hgetall(f"{{broker:esm:{uuid}}}:checkpoints"))


async def test_no_destination_drops_and_counts(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Without a destination, exhausted records are dropped, counted, and the stream moves on."""
    await create_stream(aws, "drop")
    await put_records(aws, "drop", [("k", json.dumps({"n": i}).encode()) for i in range(2)])
    target.responder = fail_if(lambda ns: 0 in ns)
    m = mapping("drop", BatchSize=1, MaximumRetryAttempts=2)
    async with broker.run(function(target), [m], **FAST) as app:
        await target.wait_for(lambda calls: any(numbers(c.event) == [1] for c in calls))
        uuid = app.config.event_source_mappings[0].UUID or ""
        assert metric(app, "broker_dropped_events_total", function="f", mapping=uuid) == 1
    assert [numbers(c.event) for c in target.calls] == [[0], [0], [0], [1]]


async def test_throttles_spend_no_attempts(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """429s are retried without spending MaximumRetryAttempts (0 here), then the batch succeeds."""
    await create_stream(aws, "thr")
    await put_records(aws, "thr", [("k", json.dumps({"n": 1}).encode())])
    statuses = iter([429, 429, 503])
    target.responder = lambda event, call: respond_json({}, status=next(statuses, 200))
    async with broker.run(function(target), [mapping("thr", MaximumRetryAttempts=0)], **FAST) as app:
        await target.wait_for(lambda calls: len(calls) >= 4)
        uuid = app.config.event_source_mappings[0].UUID or ""
        await wait_until(lambda: metric(app, "broker_invocations_total", function="f") == 1)
        assert metric(app, "broker_dropped_events_total", function="f", mapping=uuid) == 0
        assert metric(app, "broker_throttles_total", function="f", reason="HTTP429") == 2


async def test_batch_invoked_says_what_came_of_the_invocation(aws: Aws, broker: BrokerRunner,
                                                               target: RecordingTarget) -> None:
    """A response that reports item failures is logged as a partial failure with its count, never
    as a success; the retry of the rest that succeeds is a success."""
    from structlog.testing import capture_logs  # noqa: PLC0415

    await create_stream(aws, "told")
    seqs = await put_records(aws, "told", [("k", json.dumps({"n": i}).encode()) for i in range(4)])
    answers = iter([{"batchItemFailures": [{"itemIdentifier": seqs[2]}]}, {}])
    target.responder = lambda event, call: respond_json(next(answers, {}))
    m = mapping("told", BatchSize=4, FunctionResponseTypes=["ReportBatchItemFailures"])
    with capture_logs() as logs:
        async with broker.run(function(target), [m], **FAST):
            await target.wait_for(lambda calls: len(calls) >= 2)
            await wait_until(lambda: len([e for e in logs if e["event"] == "batch_invoked"]) >= 2)
    invoked = [e for e in logs if e["event"] == "batch_invoked"]
    assert (invoked[0]["outcome"], invoked[0]["failed"], invoked[0]["records"]) == ("partial_failure", 1, 4)
    assert (invoked[1]["outcome"], invoked[1]["records"]) == ("success", 2)
