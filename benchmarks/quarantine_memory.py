"""Redis memory per quarantine entry and per parked record (IsolateFailingKeys): a Kinesis record
of each data size, quarantined (or parked behind one key) N times.

    python benchmarks/quarantine_memory.py [--entries 10000]

Starts its own redis-server, writes entries as a stream mapping does (one script call per batch of
100), and prints used_memory's growth per entry.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
from pathlib import Path

import redis.asyncio as aioredis

from broker.clock import SystemClock
from broker.embedded import RedisServer
from broker.observability.metrics import Metrics
from broker.quarantine.store import Bounds, Quarantine, entry
from broker.sources.streams.parking import ParkedKeys
from broker.types import StreamRecord

SHARD = "shardId-000000000000"


def record(seq: str, data: bytes) -> dict[str, object]:
    return {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "customer-1234", "sequenceNumber": seq,
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1733300000.123},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{SHARD}:{seq}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::000000000000:role/broker",
            "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders"}


async def measure(url: str, size: int, count: int) -> float:
    client = aioredis.from_url(url)
    await client.flushall()
    before = (await client.info("memory"))["used_memory"]
    q = Quarantine(client, (f"q{size}", f"q{size}-order"), bounds=Bounds(14 * 86400, count + 1), clock=SystemClock(),
                   kept=lambda n: None, evicted=lambda n: None)
    for start in range(0, count, 100):
        batch = []
        for n in range(start, min(start + 100, count)):
            seq = f"{49650000000000000000000000000000000000000000000000000000 + n}"
            batch.append(entry(id_=f"{SHARD}:{seq}", reason="RetryAttemptsExhausted", attempts=3,
                               quarantined_at=1733300000.5, record=record(seq, b"x" * size), ShardId=SHARD,
                               SequenceNumber=seq, PartitionKey="customer-1234",
                               last_error={"errorType": "ValueError", "errorMessage": "cannot parse order"}))
        await q.add(batch)
    after = (await client.info("memory"))["used_memory"]
    await client.aclose()
    return (after - before) / count


async def measure_parked(url: str, size: int, count: int) -> float:
    client = aioredis.from_url(url)
    await client.flushall()
    before = (await client.info("memory"))["used_memory"]
    parked = ParkedKeys(client, mapping_uuid=f"m{size}", shard_id=SHARD, fence=None, clock=SystemClock(),
                        metrics=Metrics(), labels=("f", f"m{size}"))
    for start in range(0, count, 100):
        batch = []
        for n in range(start, min(start + 100, count)):
            seq = f"{49650000000000000000000000000000000000000000000000000000 + n}"
            doc = record(seq, b"x" * size)
            batch.append(StreamRecord(seq, "customer-1234", 1733300000.123, doc, json.dumps(doc).encode()))
        await parked.store(parked.take(batch, attempts=1, last=None))
    after = (await client.info("memory"))["used_memory"]
    await client.aclose()
    return (after - before) / count


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            for size in (100, 1024, 10 * 1024):
                per = await measure(server.url, size, args.entries)
                print(f"data {size:>6} bytes: {per:,.0f} bytes of Redis memory per quarantined record")
            for size in (100, 1024, 10 * 1024):
                per = await measure_parked(server.url, size, args.entries)
                print(f"data {size:>6} bytes: {per:,.0f} bytes of Redis memory per parked record")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
