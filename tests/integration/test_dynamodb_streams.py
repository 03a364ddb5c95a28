"""DynamoDB Streams mappings: record shape, typed filters, DDBStreamBatchInfo (docs/aws-semantics.md, "Event shapes", "Event filtering", "On-failure records of stream mappings")."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import ACCOUNT, REGION, Aws, Call, RecordingTarget, queue_arn

FAST = {"dynamodb_poll_interval_seconds": 0.1, "stream_discovery_interval_seconds": 1}
ISO_S = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def create_table(aws: Aws, name: str, view: str = "NEW_AND_OLD_IMAGES") -> str:
    table = await aws.call("dynamodb", "create_table", TableName=name,
                           KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST",
                           StreamSpecification={"StreamEnabled": True, "StreamViewType": view})
    return str(table["TableDescription"]["LatestStreamArn"])


def mapping(arn: str, **extra: Any) -> dict[str, Any]:
    return {"FunctionName": "f", "EventSourceArn": arn, "StartingPosition": "TRIM_HORIZON", **extra}


async def test_record_shape_insert_modify_remove(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Every field of docs/aws-semantics.md, "Event shapes", eventVersion 1.1, numeric ApproximateCreationDateTime, typed images."""
    arn = await create_table(aws, "carts")
    await aws.call("dynamodb", "put_item", TableName="carts", Item={"id": {"S": "c1"}, "n": {"N": "1"}})
    await aws.call("dynamodb", "put_item", TableName="carts", Item={"id": {"S": "c1"}, "n": {"N": "2"}})
    await aws.call("dynamodb", "delete_item", TableName="carts", Key={"id": {"S": "c1"}})
    async with broker.run(function(target), [mapping(arn)], **FAST):
        await target.wait_for(lambda calls: len(target.records()) >= 3)
    insert, modify, remove = target.records()[:3]
    assert list(insert) == ["eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb", "eventSourceARN"]
    assert [r["eventName"] for r in (insert, modify, remove)] == ["INSERT", "MODIFY", "REMOVE"]
    assert insert["eventVersion"] == "1.1"
    assert insert["eventSource"] == "aws:dynamodb"
    assert insert["awsRegion"] == REGION
    assert insert["eventSourceARN"] == arn
    assert arn.startswith(f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/carts/stream/")
    ddb = modify["dynamodb"]
    assert isinstance(ddb["ApproximateCreationDateTime"], float)
    assert ddb["Keys"] == {"id": {"S": "c1"}}
    assert ddb["NewImage"] == {"id": {"S": "c1"}, "n": {"N": "2"}}
    assert ddb["OldImage"] == {"id": {"S": "c1"}, "n": {"N": "1"}}
    assert ddb["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert ddb["SequenceNumber"].isdigit()
    assert isinstance(ddb["SizeBytes"], int)
    assert "NewImage" not in remove["dynamodb"]


async def test_binary_attributes_arrive_base64(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """B, BS and nested binary values reach the function as the base64 text the stream sent."""
    arn = await create_table(aws, "blobs")
    item = {"id": {"S": "b1"}, "blob": {"B": b"\x00\xffraw"}, "set": {"BS": [b"a", b"b"]},
            "nested": {"M": {"inner": {"B": b"\x01"}}}}
    await aws.call("dynamodb", "put_item", TableName="blobs", Item=item)
    async with broker.run(function(target), [mapping(arn)], **FAST):
        await target.wait_for(lambda calls: len(target.records()) >= 1)
    image = target.records()[0]["dynamodb"]["NewImage"]
    assert image["blob"] == {"B": "AP9yYXc="}
    assert sorted(image["set"]["BS"]) == ["YQ==", "Yg=="]
    assert image["nested"] == {"M": {"inner": {"B": "AQ=="}}}


async def test_filter_with_type_descriptors_and_metadata(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """DynamoDB patterns need the type descriptor; metadata keys (eventName) filter too."""
    arn = await create_table(aws, "typed")
    for i, status in enumerate(["open", "closed", "open"]):
        await aws.call("dynamodb", "put_item", TableName="typed", Item={"id": {"S": f"i{i}"}, "status": {"S": status}})
    await aws.call("dynamodb", "delete_item", TableName="typed", Key={"id": {"S": "i0"}})
    pattern = json.dumps({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["open"]}}}})
    no_descriptor = json.dumps({"dynamodb": {"NewImage": {"status": ["open"]}}})
    m = mapping(arn, FilterCriteria={"Filters": [{"Pattern": pattern}, {"Pattern": no_descriptor}]})
    async with broker.run(function(target), [m], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        await wait_until(lambda: metric(app, "broker_filtered_out_events_total", function="f", mapping=uuid) >= 2)
        await target.wait_for(lambda calls: len(target.records()) >= 2)
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in target.records()] == ["i0", "i2"]


async def test_failure_record_uses_ddb_batch_info_with_second_precision(aws: Aws, broker: BrokerRunner,
                                                                        target: RecordingTarget) -> None:
    """DDBStreamBatchInfo, arrival times to the second."""
    dlq = await aws.create_queue("ddb-failed")
    arn = await create_table(aws, "failing")
    await aws.call("dynamodb", "put_item", TableName="failing", Item={"id": {"S": "x"}})

    def answer(event: Any, call: Call) -> web.Response:
        return respond_json({"errorMessage": "no", "errorType": "E"}, status=500)

    target.responder = answer
    m = mapping(arn, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": queue_arn("ddb-failed")}})
    async with broker.run(function(target), [m], **FAST):
        messages = await aws.drain(dlq, 1)
    doc = json.loads(messages[0]["Body"])
    assert list(doc) == ["requestContext", "responseContext", "version", "timestamp", "DDBStreamBatchInfo"]
    info = doc["DDBStreamBatchInfo"]
    assert ISO_S.match(info["approximateArrivalOfFirstRecord"])
    assert ISO_S.match(info["approximateArrivalOfLastRecord"])
    assert info["streamArn"] == arn
    assert info["batchSize"] == 1
    assert doc["requestContext"]["approximateInvokeCount"] == 1
