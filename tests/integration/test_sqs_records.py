"""SQS mappings deliver Lambda's event shape and delete what succeeded (docs/aws-semantics.md, "Event shapes", "SQS polling and deletion")."""

from __future__ import annotations

import base64
import hashlib

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function as fn
from tests.integration.helpers import wait_until
from tests.servers import ACCOUNT, REGION, Aws, RecordingTarget, queue_arn


async def test_record_shape_field_by_field(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Every field of docs/aws-semantics.md, "Event shapes", attribute values as strings, lower-camel message attributes."""
    url = await aws.create_queue("shape", VisibilityTimeout=30)
    sent = await aws.call("sqs", "send_message", QueueUrl=url, MessageBody='{"hello": "world"}', MessageAttributes={
        "colour": {"DataType": "String", "StringValue": "blue"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    })
    plain_id = (await aws.send(url, "plain text"))[0]
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("shape")}
    async with broker.run(fn(target), [mapping]) as app:
        await target.wait_for(lambda calls: len(target.records()) >= 2)
        await wait_until(lambda: metric(app, "broker_deleted_events_total", function="f", mapping=app.config.event_source_mappings[0].UUID or "") >= 2)
    records = {r["messageId"]: r for r in target.records()}
    rec = records[sent["MessageId"]]
    assert list(rec) == ["messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                         "md5OfMessageAttributes", "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"]
    assert rec["body"] == '{"hello": "world"}'
    assert rec["md5OfBody"] == hashlib.md5(b'{"hello": "world"}').hexdigest()
    assert rec["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert rec["eventSource"] == "aws:sqs"
    assert rec["eventSourceARN"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:shape"
    assert rec["awsRegion"] == REGION
    attrs = rec["attributes"]
    assert attrs["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(attrs)
    assert all(isinstance(v, str) for v in attrs.values())
    assert attrs["SentTimestamp"].isdigit()
    assert rec["messageAttributes"]["colour"] == {"stringValue": "blue", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    assert rec["messageAttributes"]["count"] == {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"}
    assert rec["messageAttributes"]["blob"] == {"binaryValue": base64.b64encode(b"\x00\x01").decode(), "stringListValues": [], "binaryListValues": [], "dataType": "Binary"}
    plain = records[plain_id]
    assert plain["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in plain
    assert await aws.depth(url) == (0, 0)


async def test_invocation_headers_and_payload(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """The target gets {"Records": [...]} and Lambda's runtime headers."""
    await aws.create_queue("hdr", VisibilityTimeout=30)
    await aws.send(f"{aws.endpoint}/{ACCOUNT}/hdr", "x")
    async with broker.run(fn(target), [{"FunctionName": "f", "EventSourceArn": queue_arn("hdr")}]):
        calls = await target.wait_for(lambda calls: len(calls) >= 1)
    call = calls[0]
    assert set(call.event) == {"Records"}
    assert call.headers["Lambda-Runtime-Invoked-Function-Arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f"
    assert len(call.headers["Lambda-Runtime-Aws-Request-Id"]) == 36
    assert int(call.headers["Lambda-Runtime-Deadline-Ms"]) > 0
