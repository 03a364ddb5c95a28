"""A function's permits serve all its sources: three broker processes, one function with
ReservedConcurrentExecutions 3, an SQS mapping with Lambda's 20 s long polls and a Kinesis mapping
on it. Idle pollers must not sit on the permits that stream batches wait for (docs/design.md, "Redis layout")."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

from aiohttp import web

from broker.embedded import RedisServer
from tests.conftest import broker_settings
from tests.integration.helpers import wait_until
from tests.servers import (
    Aws,
    BrokerProcess,
    Call,
    MotoServer,
    RecordingTarget,
    create_stream,
    put_records,
    queue_arn,
    stream_arn,
)


async def test_streams_are_not_starved_by_idle_sqs_pollers(redis_server: RedisServer, moto_server: MotoServer,
                                                          aws: Aws, target: RecordingTarget, tmp_path: Path) -> None:
    """Every SQS message and every Kinesis record arrives within 30 s; never more than 3 at once."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()

    async def slow(_: object, __: Call) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response({})

    target.responder = slow
    url = await aws.create_queue("burst", VisibilityTimeout=30)
    await create_stream(aws, "events", 2)
    brokers = []
    for i in range(3):
        (tmp_path / f"r{i}").mkdir()
        config = {
            "broker": broker_settings(redis_server, moto_server, tmp_path / f"r{i}", replica_id=f"r{i}",
                                      sqs_wait_time_seconds=20, drain_timeout_seconds=21, lease_ttl_seconds=3,
                                      kinesis_poll_interval_seconds=0.2, kinesis_min_read_interval_seconds=0),
            "functions": {"f": {"Target": {"Url": target.url}, "Timeout": 5, "ReservedConcurrentExecutions": 3}},
            "event_source_mappings": [
                {"FunctionName": "f", "EventSourceArn": queue_arn("burst"), "BatchSize": 10},
                {"FunctionName": "f", "EventSourceArn": stream_arn("events"), "StartingPosition": "TRIM_HORIZON",
                 "BatchSize": 10},
            ],
        }
        brokers.append(BrokerProcess(config, tmp_path / f"r{i}", name=f"r{i}"))
    for b in brokers:
        b.start()
    try:
        await aws.send_batch(url, [f"m{i}" for i in range(200)])
        await put_records(aws, "events", [(f"k{i % 7}", json.dumps({"n": i}).encode()) for i in range(40)])
        started = time.monotonic()

        def delivered() -> tuple[set[str], set[int]]:
            bodies, numbers = set(), set()
            for c in target.calls:
                for r in c.event["Records"]:
                    if "body" in r:
                        bodies.add(r["body"])
                    else:
                        numbers.add(json.loads(base64.b64decode(r["kinesis"]["data"]))["n"])
            return bodies, numbers

        await wait_until(lambda: delivered() == ({f"m{i}" for i in range(200)}, set(range(40))), timeout=30)
        took = time.monotonic() - started
        # Now every poller is in an idle 20 s long poll: new stream records must still get permits.
        await asyncio.sleep(2)
        await put_records(aws, "events", [(f"k{i % 7}", json.dumps({"n": i}).encode()) for i in range(40, 60)])
        idle_start = time.monotonic()
        await wait_until(lambda: delivered()[1] == set(range(60)), timeout=15)
        idle_took = time.monotonic() - idle_start
        print(f"fairness: 200 SQS messages and 40 Kinesis records delivered in {took:.1f} s; "
              f"20 more records behind idle pollers in {idle_took:.1f} s; peak concurrency {target.peak}")
        assert target.peak <= 3
        for b in brokers:
            assert b.returncode is None
    finally:
        for b in brokers:
            b.stop()
