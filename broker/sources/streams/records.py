"""Kinesis and DynamoDB Streams GetRecords entries → Lambda's event records (docs/aws-semantics.md,
"Event shapes")."""

from __future__ import annotations

import base64
from typing import Any


def _b64(value: Any) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes | bytearray) else str(value)


def _epoch(value: Any) -> float:
    """botocore gives datetimes; emulators may give numbers."""
    return float(value.timestamp()) if hasattr(value, "timestamp") else float(value)


def kinesis_record(raw: dict[str, Any], *, shard_id: str, stream_arn: str, region: str,
                   identity_arn: str) -> dict[str, Any]:
    """One GetRecords entry as Lambda's Kinesis event record (docs/aws-semantics.md, "Event shapes")."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": raw["PartitionKey"],
            "sequenceNumber": raw["SequenceNumber"],
            "data": _b64(raw["Data"]),
            "approximateArrivalTimestamp": round(_epoch(raw["ApproximateArrivalTimestamp"]), 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{raw['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def dynamodb_record(raw: dict[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """One DynamoDB Streams GetRecords entry as Lambda's event record (docs/aws-semantics.md, "Event shapes")."""
    ddb = dict(raw["dynamodb"])
    if "ApproximateCreationDateTime" in ddb:
        ddb["ApproximateCreationDateTime"] = _epoch(ddb["ApproximateCreationDateTime"])
    record: dict[str, Any] = {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in raw:
        record["userIdentity"] = raw["userIdentity"]
    return record
