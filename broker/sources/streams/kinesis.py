"""Kinesis Data Streams: shard listing, iterators, GetRecords → Lambda's records
(docs/aws-semantics.md, "Kinesis ordering and checkpoints", "Event shapes")."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from broker.aws.clients import call, keep_raw_json
from broker.aws.lean import RAW
from broker.batching.envelope import compact
from broker.batching.filtering import decode_json_object
from broker.sources.streams.records import kinesis_record
from broker.sources.streams.service import ReadResult
from broker.types import ShardInfo, SourceKind, StreamRecord


class KinesisService:
    kind = SourceKind.KINESIS
    max_records_per_read = 10_000
    data_key = "data"

    def __init__(self, client: Any, *, arn: str, region: str, identity_arn: str, lean: Any = None) -> None:
        self._client = client
        self._get_records = lean or client.get_records  # LeanJsonCall: the idle shards' hot call
        keep_raw_json(client, "GetRecords")
        self.arn = arn
        self._stream_name = arn.split(":stream/", 1)[1]  # StreamName: what every Kinesis (and emulator) takes
        self._region = region
        self._identity_arn = identity_arn

    async def shards(self) -> list[ShardInfo]:
        out: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamName": self._stream_name}
        while True:
            page = await call(self._client.list_shards, **kwargs)
            for s in page.get("Shards", []):
                parents = tuple(p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)
                out.append(ShardInfo(s["ShardId"], parents,
                                     s.get("SequenceNumberRange", {}).get("EndingSequenceNumber")))
            token = page.get("NextToken")
            if not token:
                return out
            kwargs = {"NextToken": token}

    async def iterator(self, shard_id: str, position: str, *, sequence: str | None = None,
                       timestamp: float | None = None) -> str:
        kwargs: dict[str, Any] = {"StreamName": self._stream_name, "ShardId": shard_id,
                                  "ShardIteratorType": position}
        if sequence is not None:
            kwargs["StartingSequenceNumber"] = sequence
        if timestamp is not None:
            kwargs["Timestamp"] = dt.datetime.fromtimestamp(timestamp, dt.UTC)
        return str((await call(self._client.get_shard_iterator, **kwargs))["ShardIterator"])

    async def read(self, shard_id: str, iterator: str, limit: int) -> ReadResult:
        response = (await call(self._get_records, ShardIterator=iterator,
                               Limit=max(1, min(limit, self.max_records_per_read))))[RAW]
        records = [self._wrap(raw, shard_id) for raw in response.get("Records", [])]
        return ReadResult(records, response.get("NextShardIterator"), response.get("MillisBehindLatest"))

    def _wrap(self, raw: dict[str, Any], shard_id: str) -> StreamRecord:
        record = kinesis_record(raw, shard_id=shard_id, stream_arn=self.arn, region=self._region,
                                identity_arn=self._identity_arn)
        return StreamRecord(raw["SequenceNumber"], raw["PartitionKey"],
                            record["kinesis"]["approximateArrivalTimestamp"], record,
                            compact(record).encode(), raw["Data"])

    def filter_view(self, record: StreamRecord) -> tuple[Any, bool]:
        """The data as filters see it: the decoded JSON object, else the base64 text (never matches
        a data pattern). Only computed for mappings that filter."""
        data = record.data if isinstance(record.data, bytes) else base64.b64decode(record.data)
        try:
            return decode_json_object(data.decode("utf-8"))
        except UnicodeDecodeError:
            return record.record["kinesis"]["data"], False

