"""Concurrency permits against a real redis-server: the Lua scripts with short TTLs, loss cancelling
the guarded work, and limits holding across several broker processes (docs/aws-semantics.md, "Concurrency"; docs/design.md, "Redis layout")."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from broker.clock import SystemClock
from broker.concurrency.permits import RESERVED_REASON, PermitLost, Permits, Pool
from broker.embedded import RedisServer, free_port, wait_for_port
from broker.errors import TargetThrottled
from tests.conftest import broker_settings
from tests.integration.helpers import respond_json
from tests.servers import Aws, Call, MotoServer, RecordingTarget, create_stream, put_records, queue_arn, stream_arn

ACQUIRE_LUA = (Path(__file__).resolve().parents[2] / "broker" / "concurrency" / "scripts" / "acquire.lua").read_text()


def permits(redis: Any, limit: int, ttl: float = 30.0, replica: str = "r") -> Permits:
    return Permits(redis, lambda name: Pool(f"{{broker:fn:{name}}}:permits", limit, RESERVED_REASON),
                   clock=SystemClock(), replica=replica, ttl_seconds=ttl)


async def test_acquire_up_to_the_limit_then_throttle(redis: Any) -> None:
    """Two permits of two; the third is refused with Lambda's Reason; a release makes room."""
    p = permits(redis, 2)
    async with p.hold("f"), p.hold("f"):
        assert await p.in_use("f") == 2
        with pytest.raises(TargetThrottled) as info:
            async with p.hold("f"):
                pass
        assert info.value.reason == RESERVED_REASON
    assert await p.in_use("f") == 0
    async with p.hold("f"):
        assert await p.in_use("f") == 1


async def test_zero_is_the_off_switch(redis: Any) -> None:
    """A pool of 0 refuses at once."""
    with pytest.raises(TargetThrottled):
        async with permits(redis, 0).hold("f"):
            pass


async def test_expired_holders_are_evicted(redis: Any) -> None:
    """A crashed holder (never renews, never releases) stops counting after its TTL."""
    acquire = redis.register_script(ACQUIRE_LUA)
    pool = Pool("{broker:fn:f}:permits", 1, RESERVED_REASON)
    assert (await acquire(keys=pool.keys, args=["dead-replica", 1, 300, 0]))[0][0] == 1
    with pytest.raises(TargetThrottled):
        async with permits(redis, 1).hold("f"):
            pass
    await asyncio.sleep(0.4)
    async with permits(redis, 1).hold("f"):
        assert await permits(redis, 1).in_use("f") == 1


async def test_lost_permit_cancels_the_work(redis: Any) -> None:
    """If the permit disappears (evicted after a stall), the renewal cancels the guarded work with PermitLost."""
    p = permits(redis, 1, ttl=0.6)
    finished = False

    async def guarded() -> None:
        nonlocal finished
        async with p.hold("f"):
            await redis.delete("{broker:fn:f}:permits")  # what an expiry during a stall looks like
            await asyncio.sleep(5)
            finished = True

    with pytest.raises(PermitLost):
        await guarded()
    assert not finished


async def test_renewal_keeps_long_work_alive(redis: Any) -> None:
    """Work longer than the TTL keeps its permit while it runs."""
    p = permits(redis, 1, ttl=0.3)
    async with p.hold("f"):
        await asyncio.sleep(1.0)
        assert await p.in_use("f") == 1


def _config(tmp_path: Path, redis_server: RedisServer, moto_server: MotoServer, target: RecordingTarget,
            port: int, replica: str) -> Path:
    path = tmp_path / f"{replica}.yaml"
    path.write_text(yaml.safe_dump({
        "broker": broker_settings(redis_server, moto_server, tmp_path / replica, api={"host": "127.0.0.1", "port": port},
                                  replica_id=replica, sqs_initial_pollers=3, sqs_min_pollers=1),
        "functions": {"f": {"Target": {"Url": target.url}, "Timeout": 5, "ReservedConcurrentExecutions": 3}},
        "event_source_mappings": [
            {"FunctionName": "f", "EventSourceArn": queue_arn("burst"), "BatchSize": 1},
            {"FunctionName": "f", "EventSourceArn": stream_arn("burst"), "BatchSize": 1,
             "StartingPosition": "TRIM_HORIZON"}],
    }))
    return path


async def test_limit_holds_across_three_replicas(redis_server: RedisServer, moto_server: MotoServer, aws: Aws,
                                                 target: RecordingTarget, tmp_path: Path) -> None:
    """Three broker processes, one config: under an SQS burst, a Kinesis burst and sync invokes at once, the
    target never sees more than ReservedConcurrentExecutions at once, sync invokes beyond it get 429 with
    the Reason, and every message and record is still processed."""
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    url = await aws.create_queue("burst", VisibilityTimeout=30)
    await aws.send_batch(url, [json.dumps({"n": i}) for i in range(24)])
    await create_stream(aws, "burst", shards=2)
    await put_records(aws, "burst", [(f"k{i}", json.dumps({"n": i}).encode()) for i in range(12)])

    async def slow(event: Any, call: Call) -> web.Response:
        await asyncio.sleep(0.3)
        return respond_json({})

    target.responder = slow
    ports = [free_port() for _ in range(3)]
    procs = []
    for i, port in enumerate(ports):
        (tmp_path / f"r{i}").mkdir()
        config = _config(tmp_path, redis_server, moto_server, target, port, f"r{i}")
        procs.append(subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)))
    try:
        for port in ports:
            await asyncio.to_thread(wait_for_port, port, None, "broker", 30)
        statuses: list[tuple[int, dict[str, Any]]] = []
        async with aiohttp.ClientSession() as http:
            async def sync_invoke(port: int) -> None:
                async with http.post(f"http://127.0.0.1:{port}/2015-03-31/functions/f/invocations", data=b"{}") as r:
                    statuses.append((r.status, await r.json(content_type=None) if r.status != 200 else {}))
            for _ in range(3):
                await asyncio.gather(*(sync_invoke(p) for p in ports for _ in range(2)))
        await target.wait_for(lambda calls: len(_sqs(calls)) >= 24 and len(_kinesis(calls)) >= 12, timeout=90)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.to_thread(proc.wait, 30)
    assert target.peak <= 3
    throttled = [body for status, body in statuses if status == 429]
    assert throttled
    assert {b["Reason"] for b in throttled} == {RESERVED_REASON}
    assert sorted(json.loads(r["body"])["n"] for r in _sqs(target.calls)) == list(range(24))
    assert sorted({json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in _kinesis(target.calls)}) == \
        list(range(12))


def _sqs(calls: list[Call]) -> list[dict[str, Any]]:
    return [r for c in calls if "Records" in c.event for r in c.event["Records"] if "body" in r]


def _kinesis(calls: list[Call]) -> list[dict[str, Any]]:
    return [r for c in calls if "Records" in c.event for r in c.event["Records"] if "kinesis" in r]
