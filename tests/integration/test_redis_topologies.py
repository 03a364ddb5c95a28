"""Beyond one Redis: the broker on a real 3-master Redis Cluster (``redis+cluster://``) and on a
Sentinel-managed primary with a replica (``redis+sentinel://``), with SQS, Kinesis (checkpoints,
leases) and async invokes; and a Sentinel failover mid-flow with nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from broker.app import App
from broker.embedded import RedisServer
from tests.conftest import BrokerRunner
from tests.integration.helpers import wait_until
from tests.redis_topologies import RedisClusterServers, RedisSentinelServers
from tests.servers import Aws, MotoServer, RecordingTarget, create_stream, queue_arn, stream_arn


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path / "cluster")
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RedisSentinelServers]:
    servers = RedisSentinelServers(tmp_path / "sentinel")
    servers.start()
    yield servers
    servers.stop()


FUNCTIONS = {"f": {"Target": {"Url": ""}, "Timeout": 2, "ReservedConcurrentExecutions": 5}}
MAPPINGS = [
    {"FunctionName": "f", "EventSourceArn": queue_arn("jobs"), "BatchSize": 10},
    {"FunctionName": "f", "EventSourceArn": stream_arn("clicks"), "StartingPosition": "TRIM_HORIZON",
     "BatchSize": 10},
]


class Flow:
    """SQS messages, Kinesis records and Event invokes in; what the target got out."""

    def __init__(self, aws: Aws, target: RecordingTarget, queue_url: str) -> None:
        self.aws, self.target, self.queue_url = aws, target, queue_url
        self.sent: dict[str, set[Any]] = {"sqs": set(), "kinesis": set(), "async": set()}
        self._n = 0

    async def send(self, app: App, count: int) -> None:
        base, self._n = self._n, self._n + count
        await self.aws.send_batch(self.queue_url, [f"m{base + i}" for i in range(count)])
        self.sent["sqs"] |= {f"m{base + i}" for i in range(count)}
        for i in range(count):
            await self.aws.call("kinesis", "put_record", StreamName="clicks", PartitionKey=f"k{i}",
                                Data=json.dumps({"n": base + i}).encode())
            self.sent["kinesis"].add(base + i)
        async with aiohttp.ClientSession() as http:
            for i in range(count):
                async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations",
                                     json={"a": base + i}, headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                    if resp.status == 202:  # acknowledged: must arrive
                        self.sent["async"].add(base + i)

    def received(self) -> dict[str, set[Any]]:
        got: dict[str, set[Any]] = {"sqs": set(), "kinesis": set(), "async": set()}
        for call in self.target.calls:
            if "Records" in call.event:
                for r in call.event["Records"]:
                    if "body" in r:
                        got["sqs"].add(r["body"])
                    else:
                        got["kinesis"].add(json.loads(base64.b64decode(r["kinesis"]["data"]))["n"])
            else:
                got["async"].add(call.event["a"])
        return got

    def complete(self) -> bool:
        got = self.received()
        return all(self.sent[k] <= got[k] for k in self.sent)


async def _flow(aws: Aws, target: RecordingTarget) -> Flow:
    url = await aws.create_queue("jobs")
    await create_stream(aws, "clicks", 2)
    FUNCTIONS["f"]["Target"] = {"Url": target.url}
    return Flow(aws, target, url)


async def test_on_a_redis_cluster(cluster: RedisClusterServers, redis_server: RedisServer, moto_server: MotoServer,
                                  aws: Aws, target: RecordingTarget, tmp_path: Path) -> None:
    """SQS, Kinesis and async invokes work on a 3-master Cluster; the state is spread over the masters."""
    flow = await _flow(aws, target)
    runner = BrokerRunner(redis_server, moto_server, tmp_path)
    async with runner.run(FUNCTIONS, MAPPINGS, redis_url=cluster.url, kinesis_poll_interval_seconds=0.2,
                          kinesis_min_read_interval_seconds=0) as app:
        await flow.send(app, 20)
        await wait_until(flow.complete, timeout=30)
        status, _ = await _readyz(app)
        assert status == 200
    counts = cluster.key_counts()
    print(f"cluster: keys per master {counts}")
    assert sum(1 for c in counts if c) >= 2, counts  # hash tags spread functions and mappings over the masters
    assert cluster.keys("*:checkpoints"), "stream checkpoints are kept in the cluster"
    assert cluster.keys("*:lease_epoch"), "shard leases are kept in the cluster"


async def test_on_sentinel_with_a_failover_mid_flow(sentinel: RedisSentinelServers, redis_server: RedisServer,
                                                    moto_server: MotoServer, aws: Aws, target: RecordingTarget,
                                                    tmp_path: Path) -> None:
    """Through a Sentinel: traffic, a failover to the replica, more traffic; every SQS message,
    Kinesis record and 202'd event arrives, and the broker follows the new primary by itself."""
    flow = await _flow(aws, target)
    runner = BrokerRunner(redis_server, moto_server, tmp_path)
    async with runner.run(FUNCTIONS, MAPPINGS, redis_url=sentinel.url, kinesis_poll_interval_seconds=0.2,
                          kinesis_min_read_interval_seconds=0) as app:
        await flow.send(app, 20)
        sending = asyncio.create_task(flow.send(app, 30))
        await asyncio.sleep(0.3)
        old = sentinel.master_port()
        new = await asyncio.to_thread(sentinel.failover)
        assert new != old
        await sending
        await flow.send(app, 20)
        await wait_until(flow.complete, timeout=60)
        await wait_until(lambda: _ready_status(app, 200), timeout=30)
        got = flow.received()
        print("sentinel failover:", {k: f"{len(flow.sent[k] & got[k])}/{len(flow.sent[k])}" for k in flow.sent})
    with redis.Redis(port=new) as client:
        assert client.info("replication")["role"] == "master"
        assert client.keys("*:checkpoints"), "checkpoints are written to the new primary"


async def _readyz(app: App) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.api_port}/readyz") as resp:
        return resp.status, await resp.json()


async def _ready_status(app: App, status: int) -> bool:
    return (await _readyz(app))[0] == status
