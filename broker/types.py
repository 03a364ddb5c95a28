"""Small frozen value types that travel between components."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any


class SourceKind(enum.StrEnum):
    SQS = "sqs"
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"


@dataclass(frozen=True, slots=True)
class InvokeContext:
    """What a target learns about one invocation (Lambda's context object)."""

    request_id: str
    function_name: str
    function_arn: str
    deadline_ms: int  # Unix epoch milliseconds when the invocation times out
    trace_id: str = ""
    client_context: str | None = None


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """The function ran: ``function_error`` is None on success, else Lambda's error type."""

    payload: bytes
    function_error: str | None = None  # "Unhandled" unless the target named another
    duration_seconds: float = 0.0
    target_status: int = 200  # the target's own HTTP status (logs and metrics only)

    @property
    def ok(self) -> bool:
        return self.function_error is None

    def json(self) -> Any:
        """The payload parsed as JSON, or the raw text when it is not JSON."""
        try:
            return json.loads(self.payload) if self.payload else None
        except ValueError:
            return self.payload.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """One received SQS message, already shaped as Lambda's event record."""

    message_id: str
    receipt_handle: str
    group_id: str | None
    record: dict[str, Any]
    encoded: bytes = field(repr=False)  # the record serialized once, reused for size and payload
    received_at: float = 0.0  # monotonic seconds; its visibility timeout counts from here
