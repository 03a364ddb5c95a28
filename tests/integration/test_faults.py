"""Faults as features: the real broker process (``python -m broker run``) with SQS, Kinesis and
async traffic while Redis or the AWS endpoint is taken away. It must stay up, say so on /readyz,
recover by itself, and deliver every record and every 202'd event (duplicates allowed, never a loss).
Each test prints a ``fault:`` line with what was sent, delivered, lost and duplicated."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from broker.embedded import RedisServer, free_port
from tests.conftest import broker_settings
from tests.integration.helpers import wait_until
from tests.servers import (
    Aws,
    BrokerProcess,
    MotoServer,
    RecordingTarget,
    TcpProxy,
    create_stream,
    queue_arn,
    stream_arn,
)


class Traffic:
    """Sends SQS messages, Kinesis records and Event invokes, and checks what the target got."""

    def __init__(self, aws: Aws, broker: BrokerProcess, target: RecordingTarget, queue_url: str, stream: str) -> None:
        self.aws, self.broker, self.target = aws, broker, target
        self.queue_url, self.stream = queue_url, stream
        self.sqs: list[str] = []
        self.kinesis: list[int] = []
        self.events: list[int] = []  # only those answered 202
        self.refused = 0  # Event invokes not accepted (503 while Redis was away)
        self._n = 0

    async def send(self, count: int) -> None:
        bodies = [f"m-{self._n + i}" for i in range(count)]
        await self.aws.send_batch(self.queue_url, bodies)
        self.sqs += bodies
        for i in range(count):
            await self.aws.call("kinesis", "put_record", StreamName=self.stream, PartitionKey=f"k{i % 3}",
                                Data=json.dumps({"n": self._n + i}).encode())
            self.kinesis.append(self._n + i)
        async with aiohttp.ClientSession() as http:
            for i in range(count):
                try:
                    async with http.post(f"{self.broker.url}/2015-03-31/functions/f/invocations",
                                         json={"a": self._n + i}, headers={"X-Amz-Invocation-Type": "Event"},
                                         timeout=aiohttp.ClientTimeout(total=15)) as resp:
                        if resp.status == 202:
                            self.events.append(self._n + i)
                        else:
                            self.refused += 1
                except (aiohttp.ClientError, TimeoutError):
                    self.refused += 1
        self._n += count

    def received(self) -> tuple[collections.Counter[str], collections.Counter[int], collections.Counter[int]]:
        sqs: collections.Counter[str] = collections.Counter()
        kinesis: collections.Counter[int] = collections.Counter()
        events: collections.Counter[int] = collections.Counter()
        for call in self.target.calls:
            event = call.event
            if isinstance(event, dict) and "Records" in event:
                for r in event["Records"]:
                    if "body" in r:
                        sqs[r["body"]] += 1
                    else:
                        kinesis[json.loads(base64.b64decode(r["kinesis"]["data"]))["n"]] += 1
            elif isinstance(event, dict) and "a" in event:
                events[event["a"]] += 1
        return sqs, kinesis, events

    def all_delivered(self) -> bool:
        sqs, kinesis, events = self.received()
        return (all(sqs[b] for b in self.sqs) and all(kinesis[n] for n in self.kinesis)
                and all(events[n] for n in self.events))

    def report(self, fault: str) -> dict[str, Any]:
        sqs, kinesis, events = self.received()
        out: dict[str, Any] = {"fault": fault}
        for name, sent, got in (("sqs", self.sqs, sqs), ("kinesis", self.kinesis, kinesis), ("async", self.events, events)):
            out[name] = {"sent": len(sent), "delivered": sum(1 for s in sent if got[s]),
                         "lost": sum(1 for s in sent if not got[s]),
                         "duplicated": sum(got[s] - 1 for s in sent if got[s] > 1)}
        out["async"]["refused_503"] = self.refused
        print("fault:", json.dumps(out))
        return out


async def _setup(aws: Aws, moto: MotoServer | TcpProxy, redis_server: RedisServer, target: RecordingTarget,
                 tmp: Path, redis_url: str | None = None, **settings: Any) -> tuple[BrokerProcess, Traffic]:
    url = await aws.create_queue("jobs", VisibilityTimeout=10)
    await create_stream(aws, "clicks", 1)
    config = {
        "broker": broker_settings(redis_server, moto, tmp, kinesis_poll_interval_seconds=0.2,
                                  kinesis_min_read_interval_seconds=0, async_retry_delays_seconds=[0.5],
                                  **settings),
        "functions": {"f": {"Target": {"Url": target.url}, "Timeout": 2}},
        "event_source_mappings": [
            {"FunctionName": "f", "EventSourceArn": queue_arn("jobs"), "BatchSize": 10},
            {"FunctionName": "f", "EventSourceArn": stream_arn("clicks"), "StartingPosition": "TRIM_HORIZON",
             "BatchSize": 10},
        ],
    }
    if redis_url:
        config["broker"]["redis_url"] = redis_url
    broker = BrokerProcess(config, tmp)
    return broker, Traffic(aws, broker, target, url, "clicks")


async def _ready(broker: BrokerProcess) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(broker.ready)


def _assert_whole(report: dict[str, Any]) -> None:
    for source in ("sqs", "kinesis", "async"):
        assert report[source]["lost"] == 0, report
        assert report[source]["delivered"] == report[source]["sent"], report


async def test_redis_stopped_for_20_seconds_mid_flow(moto_server: MotoServer, aws: Aws, target: RecordingTarget,
                                                    tmp_path: Path) -> None:
    """Redis stopped for 20 s while SQS, Kinesis and async traffic flows: the process stays up,
    /readyz is 503 during the outage and 200 after, and everything sent (every 202'd event) arrives."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    broker, traffic = await _setup(aws, moto_server, redis_server, target, tmp_path)
    broker.start()
    try:
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        await traffic.send(20)
        await wait_until(traffic.all_delivered, timeout=30)

        redis_server.stop()
        stopped = time.monotonic()
        await wait_until(lambda: _ready_is(broker, 503), timeout=10)
        _status, body = await _ready(broker)
        assert any(p.startswith("redis") for p in body["problems"]), body
        await traffic.send(20)  # SQS and Kinesis keep arriving; Event invokes are refused (503), not lost
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
        assert broker.returncode is None, "the broker exited during the Redis outage"

        redis_server = RedisServer(redis_server.data_dir, port=redis_server.port)  # same port, same AOF
        redis_server.start()
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        await traffic.send(20)
        await wait_until(traffic.all_delivered, timeout=60)
        assert broker.returncode is None
        _assert_whole(traffic.report("redis stopped 20 s"))
    finally:
        broker.stop()
        _stop_redis(redis_server)


async def test_start_with_redis_down(moto_server: MotoServer, aws: Aws, target: RecordingTarget, tmp_path: Path) -> None:
    """Redis unreachable at start: the broker starts, is alive but not ready, and begins work by
    itself when Redis answers 10 s later; nothing sent meanwhile is lost."""
    port = free_port()
    redis_server = RedisServer(tmp_path / "redis", port=port)
    broker, traffic = await _setup(aws, moto_server, redis_server, target, tmp_path)
    broker.start()
    try:
        await wait_until(lambda: _ready_is(broker, 503), timeout=30)
        async with aiohttp.ClientSession() as http, http.get(f"{broker.url}/healthz") as resp:
            assert resp.status == 200
        await traffic.send(10)
        await asyncio.sleep(10)
        assert broker.returncode is None
        assert not target.calls, "nothing can run without Redis (permits)"
        redis_server.start()
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        await traffic.send(10)
        await wait_until(traffic.all_delivered, timeout=60)
        report = traffic.report("redis down at start, up after 10 s")
        _assert_whole(report)
    finally:
        broker.stop()
        _stop_redis(redis_server)


async def test_flushall_mid_flow(moto_server: MotoServer, aws: Aws, target: RecordingTarget, tmp_path: Path) -> None:
    """Redis comes back empty (FLUSHALL): the loss is logged and counted, the consumer group is
    recreated, the stream resumes after the checkpoint it had (no record skipped), new work flows."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    broker, traffic = await _setup(aws, moto_server, redis_server, target, tmp_path)
    broker.start()
    client = aioredis.from_url(redis_server.url)
    try:
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        await traffic.send(20)
        await wait_until(traffic.all_delivered, timeout=30)
        kinesis_before = sum(traffic.received()[1].values())
        await client.flushall()
        await traffic.send(20)
        await wait_until(traffic.all_delivered, timeout=60)
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        events = {line.get("event") for line in broker.log_lines()}
        assert {"consumer_group_recreated", "checkpoint_lost"} <= events, events

        async def losses() -> dict[str, float]:
            async with aiohttp.ClientSession() as http, http.get(f"{broker.url}/metrics") as resp:
                text = await resp.text()
            return {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines() if line.startswith("broker_state_lost_total{")}

        # the state marker is compared on each heartbeat (every second here)
        await wait_until(lambda: _has_all(losses(), {"redis", "consumer_group", "checkpoint"}), timeout=10)
        assert "redis_state_lost" in {line.get("event") for line in broker.log_lines()}
        report = traffic.report("FLUSHALL mid-flow")
        _assert_whole(report)
        # resumed after the restored checkpoint: the 20 records read before the flush are not all replayed
        assert sum(traffic.received()[1].values()) - kinesis_before < 40, report
    finally:
        await client.aclose()
        broker.stop()
        _stop_redis(redis_server)


async def test_aws_unreachable_for_15_seconds(moto_server: MotoServer, aws: Aws, target: RecordingTarget,
                                             tmp_path: Path) -> None:
    """The AWS endpoint refuses connections for 15 s: the broker stays up, /readyz says so, and
    SQS and Kinesis resume by themselves with nothing lost."""
    proxy = TcpProxy(moto_server.port)
    await proxy.start()
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    broker, traffic = await _setup(aws, proxy, redis_server, target, tmp_path)
    broker.start()
    try:
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        await traffic.send(20)
        await wait_until(traffic.all_delivered, timeout=30)
        await proxy.cut()
        cut = time.monotonic()
        await traffic.send(20)  # straight to the emulator: only the broker's way to it is cut
        await wait_until(lambda: _ready_is(broker, 503), timeout=15)
        _status, body = await _ready(broker)
        assert any(p.startswith("aws") for p in body["problems"]), body
        await asyncio.sleep(max(0.0, 15 - (time.monotonic() - cut)))
        assert broker.returncode is None, "the broker exited while AWS was unreachable"
        await proxy.restore()
        await wait_until(lambda: _ready_is(broker, 200), timeout=30)
        await traffic.send(10)
        await wait_until(traffic.all_delivered, timeout=60)
        _assert_whole(traffic.report("AWS endpoint unreachable 15 s"))
    finally:
        broker.stop()
        await proxy.stop()
        _stop_redis(redis_server)


async def _ready_is(broker: BrokerProcess, status: int) -> bool:
    assert broker.returncode is None, broker.log_path.read_text()[-3000:]
    return (await _ready(broker))[0] == status


async def _has_all(counts: Any, kinds: set[str]) -> bool:
    got = await counts
    return all(got.get(k, 0) >= 1 for k in kinds)


def _stop_redis(server: RedisServer) -> None:
    server.stop()
