"""The seam between shard consumers and a stream service (Kinesis, DynamoDB Streams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from broker.types import ShardInfo, SourceKind, StreamRecord


@dataclass(frozen=True, slots=True)
class ReadResult:
    records: list[StreamRecord]
    next_iterator: str | None  # None: the shard is closed and fully read
    millis_behind: int | None = None


class StreamService(Protocol):
    kind: SourceKind
    arn: str
    max_records_per_read: int  # Kinesis 10,000; DynamoDB Streams 1,000
    data_key: str  # what filters call the record's data: "data" or "dynamodb"

    async def shards(self) -> list[ShardInfo]:
        """Every shard the stream lists, open and closed."""

    async def iterator(self, shard_id: str, position: str, *, sequence: str | None = None,
                       timestamp: float | None = None) -> str:
        """A shard iterator: TRIM_HORIZON, LATEST, AT_TIMESTAMP or AFTER_SEQUENCE_NUMBER."""

    async def read(self, shard_id: str, iterator: str, limit: int) -> ReadResult:
        """One GetRecords call on ``shard_id``'s ``iterator``."""

    def filter_view(self, record: StreamRecord) -> tuple[Any, bool]:
        """(the record's data as filters see it, whether that is a JSON object)."""
