"""Nothing in Redis grows as replicas come and go: heartbeats expire, the consumers of replicas
that are gone leave the async consumer group once their entries are claimed, and a stream's
lease and checkpoint hashes hold only its shards (ended shards are forgotten, see test_kinesalite)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp

from tests.conftest import BrokerRunner
from tests.integration.helpers import function, wait_until
from tests.servers import Aws, RecordingTarget, create_stream, queue_arn, stream_arn

SETTINGS = {"heartbeat_interval_seconds": 0.3, "async_claim_idle_seconds": 0.5, "kinesis_poll_interval_seconds": 0.2,
            "kinesis_min_read_interval_seconds": 0, "lease_ttl_seconds": 1.5}


async def test_key_count_is_flat_over_replica_restarts(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Six replicas with different ids, one after another, each with SQS, Kinesis and async work:
    the number of Redis keys after each is the same, and the consumer group keeps only live consumers."""
    url = await aws.create_queue("jobs")
    await create_stream(aws, "clicks", 2)
    mappings = [{"FunctionName": "f", "EventSourceArn": queue_arn("jobs")},
                {"FunctionName": "f", "EventSourceArn": stream_arn("clicks"), "StartingPosition": "TRIM_HORIZON"}]
    counts: list[int] = []
    sent = 0
    for i in range(6):
        async with broker.run(function(target, Timeout=1), mappings, replica_id=f"r{i}", **SETTINGS) as app:
            await aws.send_batch(url, [f"m{sent + n}" for n in range(5)])
            for n in range(5):
                await aws.call("kinesis", "put_record", StreamName="clicks", PartitionKey=f"k{n}",
                               Data=json.dumps({"n": sent + n}).encode())
            async with aiohttp.ClientSession() as http:
                for n in range(5):
                    async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations",
                                         json={"a": sent + n}, headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                        assert resp.status == 202
            sent += 5
            await wait_until(lambda sent=sent: _all_in(target, sent), timeout=20)
        await asyncio.sleep(1.0)  # past the heartbeat TTL of the replica that left
        counts.append(await _dbsize(broker))
    print(f"bounded state: keys after each of 6 replica restarts: {counts}")
    assert len(set(counts[1:])) == 1, counts

    async with broker.run(function(target, Timeout=1), mappings, replica_id="last", **SETTINGS) as app:
        redis = app.redis

        async def consumers() -> list[str]:
            return [c["name"].decode() for c in await redis.xinfo_consumers("{broker:fn:f}:events", "workers")]

        await wait_until(lambda: _only(consumers(), ["last"]), timeout=30)


def _all_in(target: RecordingTarget, sent: int) -> bool:
    bodies, numbers, events = set(), set(), set()
    for c in target.calls:
        for r in c.event.get("Records", []):
            if "body" in r:
                bodies.add(r["body"])
            else:
                numbers.add(json.loads(base64.b64decode(r["kinesis"]["data"]))["n"])
        if "a" in c.event:
            events.add(c.event["a"])
    return len(bodies) >= sent and len(numbers) >= sent and len(events) >= sent


async def _only(names: Any, expected: list[str]) -> bool:
    return sorted(await names) == expected


async def _dbsize(broker: BrokerRunner) -> int:
    import redis.asyncio as aioredis  # noqa: PLC0415

    client = aioredis.from_url(broker._redis.url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()
