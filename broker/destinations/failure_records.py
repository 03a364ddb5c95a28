"""The records Lambda sends to destinations (docs/aws-semantics.md, "On-failure records of stream
mappings", "Async destinations")."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from broker.types import SourceKind


def iso_ms(epoch: float) -> str:
    """``2024-01-01T00:00:00.123Z``"""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_s(epoch: float) -> str:
    """``2024-01-01T00:00:00Z`` (DynamoDB's batch info has second precision)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stream_failure_record(*, kind: SourceKind, request_id: str, function_arn: str, condition: str,
                          invoke_count: int, response: dict[str, Any] | None, timestamp: float,
                          shard_id: str, first: tuple[str, float], last: tuple[str, float],
                          batch_size: int, stream_arn: str) -> dict[str, Any]:
    """The on-failure record of a stream mapping. ``response`` is the last invocation's
    ``responseContext`` (None when none is to be shown, e.g. RecordAgeExceeded)."""
    fmt = iso_ms if kind is SourceKind.KINESIS else iso_s
    doc: dict[str, Any] = {
        "requestContext": {"requestId": request_id, "functionArn": function_arn,
                           "condition": condition, "approximateInvokeCount": invoke_count},
    }
    if response is not None:
        doc["responseContext"] = response
    doc["version"] = "1.0"
    doc["timestamp"] = iso_ms(timestamp)
    doc["KinesisBatchInfo" if kind is SourceKind.KINESIS else "DDBStreamBatchInfo"] = {
        "shardId": shard_id,
        "startSequenceNumber": first[0],
        "endSequenceNumber": last[0],
        "approximateArrivalOfFirstRecord": fmt(first[1]),
        "approximateArrivalOfLastRecord": fmt(last[1]),
        "batchSize": batch_size,
        "streamArn": stream_arn,
    }
    return doc


def response_context(function_error: str | None, status: int = 200) -> dict[str, Any]:
    return {"statusCode": status, "executedVersion": "$LATEST", "functionError": function_error}


def s3_failure_key(mapping_uuid: str, shard_id: str, timestamp: float) -> str:
    """``aws/lambda/<ESM-UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>``"""
    t = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return (f"aws/lambda/{mapping_uuid}/{shard_id}/{t:%Y/%m/%d}/"
            f"{t:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}")


def _json_or_text(raw: str | bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def async_record(*, request_id: str, function_arn: str, condition: str, invoke_count: int, timestamp: float,
                 request_payload: str, last: dict[str, Any] | None) -> dict[str, Any]:
    """The destination record of an asynchronous invocation (docs/aws-semantics.md, "Async
    destinations"). ``last`` is the last run (``functionError``, ``payload``, ``status``) or None
    when the function never ran."""
    doc: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_ms(timestamp),
        "requestContext": {"requestId": request_id, "functionArn": f"{function_arn}:$LATEST",
                           "condition": condition, "approximateInvokeCount": invoke_count},
        "requestPayload": _json_or_text(request_payload),
    }
    if last is not None:
        context: dict[str, Any] = {"statusCode": last.get("status", 200), "executedVersion": "$LATEST"}
        if last.get("functionError"):
            context["functionError"] = last["functionError"]
        doc["responseContext"] = context
        doc["responsePayload"] = _json_or_text(last.get("payload"))
    return doc
