"""ReceiveMessage entries → Lambda's SQS event records (docs/aws-semantics.md, "Event shapes")."""

from __future__ import annotations

import base64
from typing import Any

_SQS_ATTRIBUTE_VALUE_KEYS = (("StringValue", "stringValue"), ("BinaryValue", "binaryValue"))


def _b64(value: Any) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes | bytearray) else str(value)


def sqs_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS ``MessageAttributes`` → Lambda's lower-camel shape; binary values base64."""
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = _b64(value["BinaryValue"])
        item["stringListValues"] = list(value.get("StringListValues", []))
        item["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues", [])]
        item["dataType"] = value.get("DataType", "String")
        out[name] = item
    return out


def sqs_record(message: dict[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One ReceiveMessage entry as Lambda's SQS event record (docs/aws-semantics.md, "Event shapes")."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", ())),  # SQS attribute values are strings
        "messageAttributes": sqs_message_attributes(message.get("MessageAttributes", {})),
    }
    if record["messageAttributes"] and message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["md5OfBody"] = message.get("MD5OfBody", "")
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record
