"""Small frozen value types that travel between components."""

from __future__ import annotations

import enum
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
    trace_id: str = ""  # X-Ray's header (Root=1-...;Parent=...;Sampled=...) for this attempt
    traceparent: str = ""  # the same context in W3C Trace Context's form
    client_context: str | None = None
    cognito_identity: str | None = None


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """The function ran: ``function_error`` is None on success, else Lambda's error type."""

    payload: bytes
    function_error: str | None = None  # "Unhandled" unless the target named another
    duration_seconds: float = 0.0
    target_status: int = 200  # the target's own HTTP status (logs and metrics only)
    log: str = ""  # the invocation's log tail, where the target keeps one (execution environments)

    @property
    def ok(self) -> bool:
        return self.function_error is None


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """One received SQS message, already shaped as Lambda's event record."""

    message_id: str
    receipt_handle: str
    group_id: str | None
    record: dict[str, Any]
    encoded: bytes = field(repr=False)  # the record serialized once, reused for size and payload
    received_at: float = 0.0  # monotonic seconds; its visibility timeout counts from here


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as listed by the stream: lineage and, once closed, its last sequence number."""

    shard_id: str
    parents: tuple[str, ...] = ()
    ending_sequence: str | None = None  # None while the shard is open

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One stream record, already shaped as Lambda's event record."""

    sequence: str  # decimal string, as the stream gives it
    key: str  # partition key (Kinesis) or item key (DynamoDB): the ordering key for lanes
    arrival: float  # epoch seconds when the stream received the record
    record: dict[str, Any]
    encoded: bytes = field(repr=False)
    data: Any = field(default=None, repr=False)  # the raw data (Kinesis bytes, DynamoDB images), for filters

    @property
    def seq(self) -> int:
        return int(self.sequence)
