"""Several broker processes on one redis-server and one config: shard leases spread, a killed
replica's shards are taken over after the lease TTL, a stopped replica hands off at once, and a
replica frozen past its TTL cannot write a checkpoint when it wakes (docs/design.md, "Redis layout"; docs/aws-semantics.md, "Kinesis ordering and checkpoints")."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis
import yaml

from broker.config.models import EventSourceMapping
from broker.config.rules import mapping_uuid
from broker.embedded import RedisServer, free_port, wait_for_port
from tests.conftest import broker_settings
from tests.integration.helpers import keyed, wait_until
from tests.servers import Aws, MotoServer, RecordingTarget, create_stream, put_records, stream_arn

LEASE_TTL = 2.0
MAPPING = {"FunctionName": "f", "EventSourceArn": stream_arn("shared"), "StartingPosition": "TRIM_HORIZON",
           "BatchSize": 10}
UUID = mapping_uuid(EventSourceMapping.model_validate(MAPPING))


class Cluster:
    def __init__(self, tmp: Path, redis_server: RedisServer, moto_server: MotoServer, target: RecordingTarget) -> None:
        self.tmp, self.redis_server, self.moto_server, self.target = tmp, redis_server, moto_server, target
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, replica: str) -> None:
        port = free_port()
        (self.tmp / replica).mkdir(exist_ok=True)
        path = self.tmp / f"{replica}.yaml"
        path.write_text(yaml.safe_dump({
            "broker": broker_settings(self.redis_server, self.moto_server, self.tmp / replica,
                                      api={"host": "127.0.0.1", "port": port}, replica_id=replica,
                                      lease_ttl_seconds=LEASE_TTL, stream_discovery_interval_seconds=0.5,
                                      kinesis_poll_interval_seconds=0.2, kinesis_min_read_interval_seconds=0),
            "functions": {"f": {"Target": {"Url": self.target.url}, "Timeout": 5}},
            "event_source_mappings": [MAPPING],
        }))
        self.procs[replica] = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(path)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               env=dict(os.environ))
        wait_for_port(port, self.procs[replica], replica, timeout=30)

    def signal(self, replica: str, sig: int) -> None:
        self.procs[replica].send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGKILL)
            proc.wait()


async def owners(redis_server: RedisServer) -> dict[str, str]:
    client = aioredis.from_url(redis_server.url)
    try:
        owner = await client.hgetall(f"{{broker:esm:{UUID}}}:lease_owner")
        expiry = await client.hgetall(f"{{broker:esm:{UUID}}}:lease_expiry")
    finally:
        await client.aclose()
    now = time.time() * 1000
    return {k.decode(): v.decode() for k, v in owner.items() if float(expiry.get(k, b"0")) > now}



def per_key(target: RecordingTarget) -> dict[str, list[int]]:
    return keyed(target.records())


async def _flush(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()


async def test_leases_spread_fail_over_and_hand_off(redis_server: RedisServer, moto_server: MotoServer, aws: Aws,
                                                    target: RecordingTarget, tmp_path: Path) -> None:
    await _flush(redis_server)
    await create_stream(aws, "shared", shards=6)
    keys = [f"k{i}" for i in range(24)]
    cluster = Cluster(tmp_path, redis_server, moto_server, target)
    try:
        for replica in ("r0", "r1", "r2"):
            cluster.start(replica)
        await wait_until(lambda: _spread(redis_server, {"r0", "r1", "r2"}, 6), timeout=30)

        await put_records(aws, "shared", [(k, json.dumps({"n": 0}).encode()) for k in keys])
        await target.wait_for(lambda calls: len(target.records()) >= 24, timeout=30)

        cluster.signal("r0", signal.SIGKILL)  # crash: its shards move after the lease TTL
        killed_at = time.monotonic()
        await wait_until(lambda: _spread(redis_server, {"r1", "r2"}, 6), timeout=30)
        assert time.monotonic() - killed_at < LEASE_TTL * 4
        await put_records(aws, "shared", [(k, json.dumps({"n": 1}).encode()) for k in keys])
        await target.wait_for(lambda calls: all(1 in v for v in per_key(target).values()), timeout=30)

        cluster.signal("r1", signal.SIGTERM)  # graceful: hands its shards off at once
        await wait_until(lambda: _spread(redis_server, {"r2"}, 6), timeout=20)
        await put_records(aws, "shared", [(k, json.dumps({"n": 2}).encode()) for k in keys])
        await target.wait_for(lambda calls: all(2 in v for v in per_key(target).values()), timeout=30)
    finally:
        cluster.stop_all()
    for key, numbers in per_key(target).items():
        assert sorted(set(numbers)) == [0, 1, 2], key
        assert numbers == sorted(numbers), key  # per-key (per-shard) order across every handover


async def _spread(redis_server: RedisServer, replicas: set[str], shards: int) -> bool:
    """Every shard leased, only by these replicas, none above ceil(shards / replicas) + 1."""
    current = await owners(redis_server)
    counts = collections.Counter(current.values())
    limit = -(-shards // len(replicas)) + 1
    return len(current) == shards and set(counts) == replicas and max(counts.values()) <= limit


async def test_frozen_replica_cannot_checkpoint(redis_server: RedisServer, moto_server: MotoServer, aws: Aws,
                                                target: RecordingTarget, tmp_path: Path) -> None:
    """SIGSTOP past the lease TTL: the other replica takes the shard; after SIGCONT the frozen one's
    checkpoint writes are refused (fenced) and it gives the shard up."""
    await _flush(redis_server)
    await create_stream(aws, "shared", shards=1)
    cluster = Cluster(tmp_path, redis_server, moto_server, target)
    try:
        cluster.start("a")
        await wait_until(lambda: _owned_by(redis_server, "a"), timeout=20)
        cluster.start("b")
        cluster.signal("a", signal.SIGSTOP)
        await wait_until(lambda: _owned_by(redis_server, "b"), timeout=LEASE_TTL * 6)
        seqs = await put_records(aws, "shared", [("k", json.dumps({"n": n}).encode()) for n in range(5)])
        await target.wait_for(lambda calls: len(target.records()) >= 5, timeout=20)
        cluster.signal("a", signal.SIGCONT)  # it may run what it had in hand, but never checkpoint it
        await asyncio.sleep(LEASE_TTL * 1.5)
        assert await _owned_by(redis_server, "b")
        target.calls.clear()
        seqs = await put_records(aws, "shared", [("k", json.dumps({"n": n}).encode()) for n in range(5, 8)])
        await target.wait_for(lambda calls: len(target.records()) >= 3, timeout=20)
        await asyncio.sleep(1.0)
        client = aioredis.from_url(redis_server.url)
        checkpoint = await client.hget(f"{{broker:esm:{UUID}}}:checkpoints", "shardId-000000000000")
        epoch = await client.hget(f"{{broker:esm:{UUID}}}:lease_epoch", "shardId-000000000000")
        await client.aclose()
    finally:
        cluster.stop_all()
    assert checkpoint == seqs[-1].encode()
    assert int(epoch) >= 2
    assert per_key(target) == {"k": [5, 6, 7]}  # only the lease holder reads now


async def _owned_by(redis_server: RedisServer, replica: str) -> bool:
    current = await owners(redis_server)
    return bool(current) and set(current.values()) == {replica}


