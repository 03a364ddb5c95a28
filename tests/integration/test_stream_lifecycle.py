"""Stream lifecycle: resharding keeps per-key order, pause/resume from the checkpoint, and a
SIGKILLed broker loses nothing on restart (docs/aws-semantics.md, "Kinesis ordering and checkpoints"; docs/design.md, "Redis layout")."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from broker.embedded import RedisServer, free_port
from tests.conftest import BrokerRunner, broker_settings
from tests.integration.helpers import function, keyed, respond_json, wait_until
from tests.servers import Aws, Call, MotoServer, RecordingTarget, create_stream, put_records, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 0.5}




def mapping(name: str, **extra: Any) -> dict[str, Any]:
    return {"FunctionName": "f", "EventSourceArn": stream_arn(name), "StartingPosition": "TRIM_HORIZON", **extra}


async def test_split_keeps_per_key_order_and_ends_the_parent(aws: Aws, broker: BrokerRunner,
                                                              target: RecordingTarget) -> None:
    """After a split the parent is read to its end and checkpointed SHARD_END before its children start;
    per-key order holds throughout. (The emulator keeps writing to a split parent, so lineage with
    records in the children is shown against kinesalite in test_kinesalite.py.)"""
    shard = (await create_stream(aws, "split"))[0]
    keys = [f"key{i}" for i in range(4)]
    await put_records(aws, "split", [(k, json.dumps({"n": n}).encode()) for n in range(10) for k in keys])
    await aws.call("kinesis", "split_shard", StreamName="split", ShardToSplit=shard,
                   NewStartingHashKey=str(2 ** 127))
    async with broker.run(function(target), [mapping("split", BatchSize=7)], **FAST) as app:
        await target.wait_for(lambda calls: len(target.records()) >= 40, timeout=30)
        uuid = app.config.event_source_mappings[0].UUID or ""
        source = app.runners[uuid].source
        await wait_until(lambda: len(source.consumers) == 2)  # type: ignore[attr-defined]
        checkpoints = await app.redis.hgetall(f"{{broker:esm:{uuid}}}:checkpoints")
        assert sorted(source.consumers) == ["shardId-000000000001", "shardId-000000000002"]  # type: ignore[attr-defined]
    assert keyed(target.records()) == {k: list(range(10)) for k in keys}
    assert checkpoints[shard.encode()] == b"SHARD_END"


async def test_pause_and_resume_from_checkpoint(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Enabled=false stops the shard consumers; Enabled=true resumes after the checkpoint; the API shows
    LastProcessingResult."""
    await create_stream(aws, "pausing")
    await put_records(aws, "pausing", [("k", json.dumps({"n": 0}).encode())])
    async with broker.run(function(target), [mapping("pausing")], **FAST) as app:
        await target.wait_for(lambda calls: len(target.records()) >= 1)
        uuid = app.config.event_source_mappings[0].UUID
        url = f"http://127.0.0.1:{app.api_port}/2015-03-31/event-source-mappings/{uuid}"
        async with aiohttp.ClientSession() as http:
            async def described() -> dict[str, Any]:
                async with http.get(url) as resp:
                    return dict(await resp.json())

            await wait_until(lambda: _equals(described(), "LastProcessingResult", "OK"))
            assert (await described())["StartingPosition"] == "TRIM_HORIZON"
            async with http.put(url, json={"Enabled": False}) as resp:
                assert resp.status == 202
            await wait_until(lambda: app.runners[uuid or ""].state == "Disabled")
            await put_records(aws, "pausing", [("k", json.dumps({"n": 1}).encode())])
            await asyncio.sleep(1.0)
            assert len(target.records()) == 1
            async with http.put(url, json={"Enabled": True}) as resp:
                assert resp.status == 202
            await target.wait_for(lambda calls: len(target.records()) >= 2)
    assert keyed(target.records()) == {"k": [0, 1]}


async def test_sigkill_loses_nothing(redis_server: RedisServer, moto_server: MotoServer, aws: Aws,
                                     target: RecordingTarget, tmp_path: Path) -> None:
    """SIGKILL between batches and during an invocation; after restart every record is delivered,
    and only the batch in flight at the kill is delivered twice."""
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    await create_stream(aws, "crash")
    await put_records(aws, "crash", [("k", json.dumps({"n": n}).encode()) for n in range(30)])
    hang = asyncio.Event()
    release = asyncio.Event()

    async def answer(event: Any, call: Call) -> web.Response:
        if 12 in [json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event["Records"]] and not hang.is_set():
            hang.set()
            with contextlib.suppress(TimeoutError):  # the broker is killed while this invocation is in flight
                await asyncio.wait_for(release.wait(), 30)
        return respond_json({})

    target.responder = answer
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump({
        "broker": broker_settings(redis_server, moto_server, tmp_path, api={"host": "127.0.0.1", "port": free_port()},
                                  **FAST),
        "functions": {"f": {"Target": {"Url": target.url}, "Timeout": 60}},
        "event_source_mappings": [mapping("crash", BatchSize=3)],
    }))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))

    proc = start()
    try:
        await asyncio.wait_for(hang.wait(), 30)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        delivered_before = keyed(target.records())["k"]
        assert delivered_before == list(range(15))  # batches of 3; [12, 13, 14] was in flight
        proc = start()
        await target.wait_for(lambda calls: keyed(target.records())["k"][-1:] == [29], timeout=30)
    finally:
        release.set()
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
    seen = keyed(target.records())["k"]
    assert sorted(set(seen)) == list(range(30))
    duplicates = sorted(n for n, c in collections.Counter(seen).items() if c > 1)
    assert duplicates == [12, 13, 14]


async def _equals(doc: Any, key: str, value: Any) -> bool:
    return bool((await doc)[key] == value)
