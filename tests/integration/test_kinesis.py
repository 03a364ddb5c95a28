"""Kinesis mappings: record shape, order per shard and per key, checkpoints, start positions,
filters (docs/aws-semantics.md, "Mapping parameters", "Partial batch responses", "Event filtering", "Kinesis ordering and checkpoints", "Event shapes")."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from typing import Any

from aiohttp import web

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, keyed, respond_json, wait_until
from tests.servers import ACCOUNT, REGION, Aws, Call, RecordingTarget, create_stream, put_records, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1}


def mapping(name: str, **extra: Any) -> dict[str, Any]:
    return {"FunctionName": "f", "EventSourceArn": stream_arn(name), "StartingPosition": "TRIM_HORIZON", **extra}




async def test_record_shape_and_order_per_shard(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Every field of docs/aws-semantics.md, "Event shapes"; each shard's records arrive in sequence order; checkpoints are written."""
    shards = await create_stream(aws, "clicks", shards=2)
    items = [(f"k{i % 5}", json.dumps({"n": i}).encode()) for i in range(40)]
    seqs = await put_records(aws, "clicks", items)
    before = time.time()
    fns = function(target, Role="arn:aws:iam::000000000000:role/clicks-reader")
    async with broker.run(fns, [mapping("clicks", BatchSize=7)], **FAST) as app:
        await target.wait_for(lambda calls: len(target.records()) >= 40)
        uuid = app.config.event_source_mappings[0].UUID
        key = f"{{broker:esm:{uuid}}}:checkpoints"
        expected: dict[str, str] = {}
        for r in target.records():
            shard, seq = r["eventID"].split(":")[0], r["kinesis"]["sequenceNumber"]
            expected[shard] = max(expected.get(shard, seq), seq, key=int)
        await wait_until(lambda: _checkpoints_are(app, key, expected))
        checkpoints = await app.redis.hgetall(key)
    records = target.records()
    rec = records[0]
    assert list(rec) == ["kinesis", "eventSource", "eventVersion", "eventID", "eventName", "invokeIdentityArn",
                         "awsRegion", "eventSourceARN"]
    assert list(rec["kinesis"]) == ["kinesisSchemaVersion", "partitionKey", "sequenceNumber", "data",
                                    "approximateArrivalTimestamp"]
    assert rec["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert rec["eventSource"] == "aws:kinesis"
    assert rec["eventVersion"] == "1.0"
    assert rec["eventName"] == "aws:kinesis:record"
    assert rec["invokeIdentityArn"] == "arn:aws:iam::000000000000:role/clicks-reader"
    assert rec["awsRegion"] == REGION
    assert rec["eventSourceARN"] == f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/clicks"
    assert rec["eventID"].split(":")[0] in shards
    assert rec["eventID"] == f"{rec['eventID'].split(':')[0]}:{rec['kinesis']['sequenceNumber']}"
    assert isinstance(rec["kinesis"]["approximateArrivalTimestamp"], float)
    assert before - 60 < rec["kinesis"]["approximateArrivalTimestamp"] <= time.time()
    assert all(len(c.event["Records"]) <= 7 for c in target.calls)
    per_shard: dict[str, list[int]] = collections.defaultdict(list)
    for r in records:
        per_shard[r["eventID"].split(":")[0]].append(int(r["kinesis"]["sequenceNumber"]))
    assert all(v == sorted(v) for v in per_shard.values())
    assert sorted(r["kinesis"]["sequenceNumber"] for r in records) == sorted(seqs)
    assert {k.decode(): v.decode() for k, v in checkpoints.items()} == {
        shard: str(max(v)) for shard, v in per_shard.items()}


async def test_parallelization_keeps_per_key_order(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """ParallelizationFactor 4 on one shard: keys run in parallel, each key stays in order."""
    await create_stream(aws, "par")
    items = [(f"key{i % 8}", json.dumps({"n": i}).encode()) for i in range(120)]
    await put_records(aws, "par", items)

    async def answer(event: Any, call: Call) -> web.Response:
        await asyncio.sleep(random.uniform(0.01, 0.05))
        return respond_json({})

    target.responder = answer
    async with broker.run(function(target), [mapping("par", BatchSize=5, ParallelizationFactor=4)], **FAST):
        await target.wait_for(lambda calls: len(target.records()) >= 120, timeout=30)
    for key, numbers in keyed(target.records()).items():
        assert numbers == sorted(numbers), key
        assert len(numbers) == 15
    assert target.peak >= 2


async def test_restart_resumes_after_the_checkpoint(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A second start reads only what came after the checkpoint (StartingPosition is for the first start)."""
    await create_stream(aws, "resume")
    await put_records(aws, "resume", [("k", json.dumps({"n": i}).encode()) for i in range(10)])
    async with broker.run(function(target), [mapping("resume")], **FAST):
        await target.wait_for(lambda calls: len(target.records()) >= 10)
    await put_records(aws, "resume", [("k", json.dumps({"n": i}).encode()) for i in range(10, 15)])
    target.calls.clear()
    async with broker.run(function(target), [mapping("resume")], **FAST):
        await target.wait_for(lambda calls: len(target.records()) >= 5)
        await asyncio.sleep(0.5)
    assert keyed(target.records()) == {"k": [10, 11, 12, 13, 14]}


async def test_latest_and_at_timestamp(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """AT_TIMESTAMP starts at the first record at or after the time; LATEST at the tip."""
    await create_stream(aws, "when")
    await put_records(aws, "when", [("k", json.dumps({"n": i}).encode()) for i in range(3)])
    await asyncio.sleep(1.2)
    cut = time.time()
    await asyncio.sleep(0.2)
    await put_records(aws, "when", [("k", json.dumps({"n": i}).encode()) for i in range(3, 6)])
    m = mapping("when", StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=cut)
    async with broker.run(function(target), [m], **FAST):
        await target.wait_for(lambda calls: len(target.records()) >= 3)
        await asyncio.sleep(0.5)
    assert keyed(target.records()) == {"k": [3, 4, 5]}


async def test_latest_skips_what_was_there(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """LATEST delivers only records written after the mapping started."""
    await create_stream(aws, "tip")
    await put_records(aws, "tip", [("k", json.dumps({"n": 0}).encode())])
    async with broker.run(function(target), [mapping("tip", StartingPosition="LATEST")], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        # the shard has read once: its LATEST iterator is open (a fixed sleep raced a slow start)
        await wait_until(lambda: metric(app, "broker_stream_reads_total", function="f", mapping=uuid) >= 1)
        await put_records(aws, "tip", [("k", json.dumps({"n": 1}).encode())])
        await target.wait_for(lambda calls: len(target.records()) >= 1)
    assert keyed(target.records()) == {"k": [1]}


async def test_filters_on_decoded_data(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Kinesis data is matched as JSON after base64 decoding; non-JSON data never matches a data
    pattern; filtered records pass the checkpoint."""
    await create_stream(aws, "filt")
    seqs = await put_records(aws, "filt", [
        ("k", b'{"type": "click", "n": 1}'), ("k", b'{"type": "view", "n": 2}'), ("k", b"not json"),
        ("k", b'{"type": "click", "n": 3}')])
    m = mapping("filt", FilterCriteria={"Filters": [{"Pattern": '{"data": {"type": ["click"]}}'}]})
    async with broker.run(function(target), [m], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        await target.wait_for(lambda calls: len(target.records()) >= 2)
        await wait_until(lambda: metric(app, "broker_filtered_out_events_total", function="f", mapping=uuid) == 2)
        await wait_until(lambda: _checkpoint(app, uuid), timeout=5)
        assert (await _checkpoint(app, uuid)) == seqs[-1]
    assert keyed(target.records()) == {"k": [1, 3]}


async def _checkpoints_are(app: Any, key: str, expected: dict[str, str]) -> bool:
    raw = await app.redis.hgetall(key)
    return {k.decode(): v.decode() for k, v in raw.items()} == expected


async def _checkpoint(app: Any, uuid: str) -> str | None:
    values = await app.redis.hvals(f"{{broker:esm:{uuid}}}:checkpoints")
    return values[0].decode() if values else None
