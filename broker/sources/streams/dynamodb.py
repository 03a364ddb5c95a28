"""DynamoDB Streams: shard listing, iterators, GetRecords → Lambda's records
(docs/aws-semantics.md, "DynamoDB Streams", "Event shapes")."""

from __future__ import annotations

import json
from typing import Any

from broker.aws.clients import call, keep_raw_json
from broker.aws.lean import RAW
from broker.batching.envelope import compact
from broker.sources.streams.records import dynamodb_record
from broker.sources.streams.service import ReadResult
from broker.types import ShardInfo, SourceKind, StreamRecord

_key_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


class DynamoDBStreamsService:
    kind = SourceKind.DYNAMODB
    max_records_per_read = 1_000
    data_key = "dynamodb"

    def __init__(self, client: Any, *, arn: str, region: str, lean: Any = None) -> None:
        self._client = client
        self._get_records = lean or client.get_records  # LeanJsonCall: the idle shards' hot call
        keep_raw_json(client, "GetRecords")  # attribute values as sent: binary ones stay base64, as Lambda shows them
        self.arn = arn
        self._region = region

    async def shards(self) -> list[ShardInfo]:
        out: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamArn": self.arn}
        while True:
            desc = (await call(self._client.describe_stream, **kwargs))["StreamDescription"]
            for s in desc.get("Shards", []):
                parents = (s["ParentShardId"],) if s.get("ParentShardId") else ()
                out.append(ShardInfo(s["ShardId"], parents,
                                     s.get("SequenceNumberRange", {}).get("EndingSequenceNumber")))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                return out
            kwargs = {"StreamArn": self.arn, "ExclusiveStartShardId": last}

    async def iterator(self, shard_id: str, position: str, *, sequence: str | None = None,
                       timestamp: float | None = None) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.arn, "ShardId": shard_id, "ShardIteratorType": position}
        if sequence is not None:
            kwargs["SequenceNumber"] = sequence
        return str((await call(self._client.get_shard_iterator, **kwargs))["ShardIterator"])

    async def read(self, shard_id: str, iterator: str, limit: int) -> ReadResult:
        response = (await call(self._get_records, ShardIterator=iterator,
                               Limit=max(1, min(limit, self.max_records_per_read))))[RAW]
        records = [self._wrap(raw) for raw in response.get("Records", [])]
        return ReadResult(records, response.get("NextShardIterator"))

    def _wrap(self, raw: dict[str, Any]) -> StreamRecord:
        record = dynamodb_record(raw, stream_arn=self.arn, region=self._region)
        ddb = record["dynamodb"]
        return StreamRecord(ddb["SequenceNumber"], _key_encode(ddb.get("Keys", {})),
                            float(ddb.get("ApproximateCreationDateTime", 0.0)), record,
                            compact(record).encode(), ddb)

    def filter_view(self, record: StreamRecord) -> tuple[Any, bool]:
        return record.record["dynamodb"], True
