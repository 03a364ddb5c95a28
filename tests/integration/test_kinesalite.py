"""Against kinesalite, which closes shards, routes writes to children and expires iterators
faithfully: shard end by a null iterator, per-key order across a split with records in parent and
children, and a consumer whose iterator expired going on after the last record it read."""

from __future__ import annotations

import json
from typing import Any

from structlog.testing import capture_logs

from tests.conftest import BrokerRunner
from tests.integration.helpers import function, keyed, wait_until
from tests.servers import Aws, Kinesalite, RecordingTarget, put_records, stream_arn, wait_active

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 0.5}




async def test_split_parent_before_children(kinesalite: Kinesalite, kinesalite_broker: BrokerRunner,
                                            target: RecordingTarget) -> None:
    """Records before a split live in the parent, after it in the children: every key's records still
    arrive in order, because children start only after the parent is read to its end."""
    aws = Aws(kinesalite.url)
    try:
        await _run_split(aws, kinesalite_broker, target)
    finally:
        aws.close()


async def _run_split(aws: Aws, kinesalite_broker: BrokerRunner, target: RecordingTarget) -> None:
    await aws.call("kinesis", "create_stream", StreamName="lineage", ShardCount=1)
    await wait_active(aws, "lineage")
    keys = [f"key{i}" for i in range(6)]
    await put_records(aws, "lineage", [(k, json.dumps({"n": n}).encode()) for n in range(5) for k in keys])
    await aws.call("kinesis", "split_shard", StreamName="lineage", ShardToSplit="shardId-000000000000",
                   NewStartingHashKey=str(2 ** 127))
    await wait_active(aws, "lineage")
    shards_after = await put_records(aws, "lineage", [(k, json.dumps({"n": n}).encode()) for n in range(5, 10) for k in keys])
    assert shards_after
    m = {"FunctionName": "f", "EventSourceArn": stream_arn("lineage"), "StartingPosition": "TRIM_HORIZON",
         "BatchSize": 4}
    async with kinesalite_broker.run(function(target), [m], **FAST) as app:
        await target.wait_for(lambda calls: len(target.records()) >= 60, timeout=30)
        uuid = app.config.event_source_mappings[0].UUID
        tag = f"{{broker:esm:{uuid}}}"
        # Bounded state: once the children have checkpoints, the ended parent is forgotten.
        await wait_until(lambda: _fields(app, f"{tag}:checkpoints", {"shardId-000000000001", "shardId-000000000002"}))
        epochs = await app.redis.hkeys(f"{tag}:lease_epoch")
    assert keyed(target.records()) == {k: list(range(10)) for k in keys}
    assert b"shardId-000000000000" not in epochs, "the parent's lease fields are forgotten too"
    parent = [r for r in target.records() if r["eventID"].startswith("shardId-000000000000:")]
    children = [r for r in target.records() if not r["eventID"].startswith("shardId-000000000000:")]
    assert len(parent) == 30
    assert len(children) == 30
    assert target.records().index(children[0]) >= 30  # nothing from a child before the parent ended


async def _fields(app: Any, key: str, expected: set[str]) -> bool:
    return {k.decode() for k in await app.redis.hkeys(key)} == expected


async def test_expired_iterator_resumes_after_the_last_record_read(kinesalite: Kinesalite,
                                                                   kinesalite_broker: BrokerRunner,
                                                                   target: RecordingTarget) -> None:
    """kinesalite's clock jumps past the 5-minute iterator lifetime mid-stream: the consumer's next
    GetRecords is refused with ExpiredIteratorException, a new iterator is taken after the last
    record read (never from StartingPosition), and every record arrives once, in order."""
    aws = Aws(kinesalite.url)
    try:
        await aws.call("kinesis", "create_stream", StreamName="expiry", ShardCount=1)
        await wait_active(aws, "expiry")
        await put_records(aws, "expiry", [("k", json.dumps({"n": n}).encode()) for n in range(10)])
        m = {"FunctionName": "f", "EventSourceArn": stream_arn("expiry"), "StartingPosition": "TRIM_HORIZON",
             "BatchSize": 5}
        with capture_logs() as logs:
            async with kinesalite_broker.run(function(target), [m], **FAST):
                await target.wait_for(lambda calls: len(target.records()) >= 10, timeout=30)
                kinesalite.expire_iterators()
                await wait_until(lambda: _logged(logs, "ExpiredIteratorException"), timeout=10)
                await put_records(aws, "expiry", [("k", json.dumps({"n": n}).encode()) for n in range(10, 20)])
                await target.wait_for(lambda calls: len(target.records()) >= 20, timeout=30)
    finally:
        aws.close()
    assert keyed(target.records()) == {"k": list(range(20))}


async def _logged(logs: list[dict[str, Any]], text: str) -> bool:
    return any(text in str(entry.get("error", "")) for entry in logs)
