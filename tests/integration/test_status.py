"""GET /broker/v1/status on two replicas running an SQS mapping, a Kinesis mapping, async invokes
and a function with execution environments: every field there and true (owners match the leases,
checkpoints match Redis), a failing target shows RetryingSince, a killed replica leaves the
document; and ``broker status`` prints it as a table and as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker.embedded import RedisServer
from tests.conftest import BrokerRunner, broker_settings
from tests.integration.helpers import respond_json, wait_until
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

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1, "lease_ttl_seconds": 2, "status_interval_seconds": 0.3,
        "retry_backoff_base_seconds": 0.2, "retry_backoff_max_seconds": 0.5}
STREAM_MAPPING = "6f1a2b3c-0000-4000-8000-00000000cc01"
QUEUE_MAPPING = "6f1a2b3c-0000-4000-8000-00000000cc02"


def _functions(target: RecordingTarget) -> dict[str, Any]:
    return {"f": {"Target": {"Url": target.url}, "Timeout": 2},
            "env": {"Target": {"Handler": "tests.handlers.behaviours:handler"}, "Timeout": 5}}


def _mappings() -> list[dict[str, Any]]:
    return [{"UUID": STREAM_MAPPING, "FunctionName": "f", "EventSourceArn": stream_arn("watched"),
             "StartingPosition": "TRIM_HORIZON", "BatchSize": 10},
            {"UUID": QUEUE_MAPPING, "FunctionName": "f", "EventSourceArn": queue_arn("watched"), "BatchSize": 10}]


async def _status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/broker/v1/status") as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


def _mapping(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    return next(m for m in doc["Mappings"] if m["UUID"] == uuid)


async def test_status_of_two_replicas(aws: Aws, moto_server: MotoServer, redis_server: RedisServer,
                                      broker: BrokerRunner, target: RecordingTarget, tmp_path: Path) -> None:
    await create_stream(aws, "watched", shards=2)
    url = await aws.create_queue("watched", VisibilityTimeout=10)
    failing: list[bool] = []

    def answer(event: Any, call: Call) -> web.Response:
        if failing and "Records" in event and event["Records"][0].get("eventSource") == "aws:kinesis":
            return respond_json({"errorType": "Boom", "errorMessage": "stuck on purpose"}, status=500)
        return respond_json({})

    target.responder = answer
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path, **FAST, replica_id="other"),
              "functions": _functions(target), "event_source_mappings": _mappings()}
    other = BrokerProcess(config, tmp_path, name="other")
    other.start()
    try:
        async with broker.run(_functions(target), _mappings(), replica_id="here", **FAST) as app:
            here = f"http://127.0.0.1:{app.api_port}"
            await put_records(aws, "watched", [(f"k{i}", json.dumps({"n": i}).encode()) for i in range(20)])
            await aws.send_batch(url, [f"m{i}" for i in range(5)])
            async with aiohttp.ClientSession() as http:
                for i in range(3):
                    async with http.post(f"{here}/2015-03-31/functions/env/invocations", data=json.dumps({"i": i}),
                                         headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                        assert resp.status == 202

            async def balanced() -> bool:
                doc = await _status(here)
                shards = _mapping(doc, STREAM_MAPPING)["Shards"]
                return {s["Owner"] for s in shards} == {"here", "other"} and all(
                    s["Checkpoint"] and s["State"] == "processing" and s["IteratorAgeMilliseconds"] is not None
                    for s in shards)
            await wait_until(balanced, timeout=40)
            doc = await _status(here)
            assert [r["ReplicaId"] for r in doc["Replicas"]] == ["here", "other"]
            for replica in doc["Replicas"]:
                assert replica["Ready"] is True, replica
                assert replica["Problems"] == []
                assert replica["Version"]
                assert replica["LastHeartbeat"] >= replica["StartedAt"]
            stream = _mapping(doc, STREAM_MAPPING)
            assert (stream["FunctionName"], stream["EventSourceArn"], stream["State"], stream["Origin"]) == (
                "f", stream_arn("watched"), "Enabled", "file")
            assert sorted(stream["RunningOn"]) == ["here", "other"]
            assert stream["Quarantined"] == 0
            owners = {k.decode(): v.decode() for k, v in
                      (await app.redis.hgetall(f"{{broker:esm:{STREAM_MAPPING}}}:lease_owner")).items()}
            checkpoints = {k.decode(): v.decode() for k, v in
                           (await app.redis.hgetall(f"{{broker:esm:{STREAM_MAPPING}}}:checkpoints")).items()}
            assert {s["ShardId"]: s["Owner"] for s in stream["Shards"]} == owners
            assert {s["ShardId"]: s["Checkpoint"] for s in stream["Shards"]} == checkpoints
            for shard in stream["Shards"]:
                assert shard["State"] == "processing"
                assert shard["IteratorAgeMilliseconds"] is not None
                assert "RetryingSince" not in shard
            queue = _mapping(doc, QUEUE_MAPPING)
            assert queue["Pollers"] >= 2, "both replicas poll"
            assert "Shards" not in queue
            functions = {f["FunctionName"]: f for f in doc["Functions"]}
            assert functions["f"]["Target"] == "http"
            assert functions["f"]["ConcurrencyLimit"] == 1000
            assert set(functions["f"]["AsyncQueue"]) == {"Depth", "InFlight", "DelayedRetries", "OldestAgeSeconds"}
            assert functions["env"]["Target"] == "handler"
            assert sum(functions["env"]["Environments"].values()) >= 1, "the Event invokes started an environment"
            assert "Waiting" in functions["env"]

            failing.append(True)
            await put_records(aws, "watched", [(f"k{i}", json.dumps({"n": i}).encode()) for i in range(20, 24)])

            async def stuck() -> bool:
                shards = _mapping(await _status(here), STREAM_MAPPING)["Shards"]
                return any("RetryingSince" in s for s in shards)
            await wait_until(stuck, timeout=30)
            shards = _mapping(await _status(here), STREAM_MAPPING)["Shards"]
            retrying = next(s for s in shards if "RetryingSince" in s)
            assert retrying["LastError"] == {"errorType": "Boom", "errorMessage": "stuck on purpose", "status": 500}
            assert retrying["InFlight"] == 1
            failing.clear()

            other.signal(signal.SIGKILL)

            async def gone() -> bool:
                doc = await _status(here)
                return [r["ReplicaId"] for r in doc["Replicas"]] == ["here"] and all(
                    s["Owner"] == "here" for s in _mapping(doc, STREAM_MAPPING)["Shards"])
            await wait_until(gone, timeout=30)

            cli = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "broker", "status", "--endpoint", here], capture_output=True, text=True,
                timeout=60, check=False, env=_unsigned())
            assert cli.returncode == 0, cli.stderr
            lines = cli.stdout.splitlines()
            assert lines[0].split()[:3] == ["MAPPING", "FUNCTION", "SOURCE"], cli.stdout
            assert any(STREAM_MAPPING[:8] in line and "Enabled" in line for line in lines), cli.stdout
            assert any(line.split()[:1] == ["FUNCTION"] for line in lines), cli.stdout
            raw = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "broker", "status", "--endpoint", here, "-o", "json"], capture_output=True,
                text=True, timeout=60, check=False, env=_unsigned())
            assert raw.returncode == 0, raw.stderr
            assert {m["UUID"] for m in json.loads(raw.stdout)["Mappings"]} == {STREAM_MAPPING, QUEUE_MAPPING}
    finally:
        other.stop()


def _unsigned() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))}
    return {**env, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


async def test_redis_away_the_status_says_so_and_comes_back(moto_server: MotoServer, target: RecordingTarget,
                                                            tmp_path: Path) -> None:
    """Redis stops: the status answers 503 in Lambda's shape, the broker stays up and publishing
    waits; with Redis back the replica's view is there again."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path, **FAST, replica_id="lonely"),
              "functions": _functions(target), "event_source_mappings": []}
    proc = BrokerProcess(config, tmp_path)
    proc.start()
    try:
        await wait_until(lambda: _replicas_are(proc.url, ["lonely"]), timeout=30)
        redis_server.stop()
        async with aiohttp.ClientSession() as http, http.get(f"{proc.url}/broker/v1/status") as resp:
            assert resp.status == 503
            assert resp.headers["X-Amzn-ErrorType"].startswith("ServiceException")
        await asyncio.sleep(1)  # a few publishing intervals without Redis
        assert proc.returncode is None, "the broker exited while Redis was away"
        redis_server = RedisServer(redis_server.data_dir, port=redis_server.port)
        redis_server.start()
        await wait_until(lambda: _replicas_are(proc.url, ["lonely"]), timeout=30)
        assert any(line.get("event") == "status_publish_failed" for line in proc.log_lines())
    finally:
        proc.stop()
        redis_server.stop()


async def _replicas_are(url: str, expected: list[str]) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/broker/v1/status") as resp:
        return resp.status == 200 and [r["ReplicaId"] for r in (await resp.json())["Replicas"]] == expected
