"""Rewinding a live stream mapping on two replicas: POST /broker/v1/mappings/{UUID}/position (and
``broker rewind``) stops every consumer after its batch in flight and delivers again from the
position set, once each and in order per key."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from broker.app import App
from tests.conftest import BrokerRunner
from tests.integration.helpers import function, wait_until
from tests.servers import Aws, RecordingTarget, create_stream, put_records, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1, "lease_ttl_seconds": 3}
MAPPING = "6f1a2b3c-0000-4000-8000-00000000aa01"
KEYS = [f"key-{k}" for k in range(10)]


def _delivered(target: RecordingTarget, since: int = 0) -> list[tuple[str, int]]:
    """(partition key, n) of every record delivered, in delivery order, from call ``since`` on."""
    return [(r["kinesis"]["partitionKey"], json.loads(base64.b64decode(r["kinesis"]["data"]))["n"])
            for c in target.calls[since:] for r in c.event.get("Records", [])]


def _in_order_per_key(delivered: list[tuple[str, int]]) -> bool:
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for key, n in delivered:
        per_key[key].append(n)
    return all(ns == sorted(ns) for ns in per_key.values())


async def _put(aws: Aws, stream: str, numbers: range) -> list[str]:
    return await put_records(aws, stream, [(KEYS[n % len(KEYS)], json.dumps({"n": n}).encode()) for n in numbers])


async def _position(app: App, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{app.api_port}/broker/v1/mappings/{MAPPING}/position", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


@asynccontextmanager
async def _two_replicas(broker: BrokerRunner, target: RecordingTarget, stream: str) -> AsyncIterator[tuple[App, App]]:
    m = {"UUID": MAPPING, "FunctionName": "f", "EventSourceArn": stream_arn(stream), "StartingPosition": "TRIM_HORIZON",
         "BatchSize": 10}
    other = BrokerRunner(broker._redis, broker._moto, broker._tmp / "other")
    (broker._tmp / "other").mkdir()
    async with broker.run(function(target), [m], replica_id="one", **FAST) as first, \
            other.run(function(target), [m], replica_id="two", **FAST) as second:
        yield first, second


def _shards_held(app: App) -> float:
    from tests.conftest import metric  # noqa: PLC0415
    return metric(app, "broker_leases_owned", function="f", mapping=MAPPING)


async def _exactly(target: RecordingTarget, since: int, count: int) -> list[tuple[str, int]]:
    """Wait for ``count`` records delivered since call ``since``, then check no more come."""
    await wait_until(lambda: len(_delivered(target, since)) >= count, timeout=40)
    await asyncio.sleep(2)  # a negative check: nothing delivered twice arrives late
    return _delivered(target, since)


async def test_rewind_to_trim_horizon_on_two_replicas_delivers_everything_again_once(
        aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    await create_stream(aws, "rewound", shards=2)
    await _put(aws, "rewound", range(100))
    async with _two_replicas(broker, target, "rewound") as (first, second):
        await wait_until(lambda: len(_delivered(target)) >= 100, timeout=40)
        await wait_until(lambda: _shards_held(first) == 1 and _shards_held(second) == 1, timeout=20)
        assert sorted(n for _, n in _delivered(target)) == list(range(100))
        since = len(target.calls)
        status, answer = await _position(second, {"StartingPosition": "TRIM_HORIZON"})
        assert status == 202, answer
        assert answer["StartingPosition"] == "TRIM_HORIZON"
        again = await _exactly(target, since, 100)
        assert sorted(n for _, n in again) == list(range(100)), "all 100 again, once each"
        assert _in_order_per_key(again)
        # the replicas go on from there: a new record comes once
        since = len(target.calls)
        await _put(aws, "rewound", range(100, 101))
        assert [n for _, n in await _exactly(target, since, 1)] == [100]


async def test_rewind_to_a_timestamp_and_after_a_sequence_number(
        aws: Aws, broker: BrokerRunner, target: RecordingTarget, tmp_path: Path) -> None:
    """AT_TIMESTAMP through the API, a sequence number through ``broker rewind``."""
    (shard,) = await create_stream(aws, "moments")
    seqs = await _put(aws, "moments", range(50))
    await asyncio.sleep(1.5)
    moment = time.time()
    await asyncio.sleep(1.5)
    seqs += await _put(aws, "moments", range(50, 100))
    async with _two_replicas(broker, target, "moments") as (first, _second):
        await wait_until(lambda: len(_delivered(target)) >= 100, timeout=40)
        since = len(target.calls)
        status, answer = await _position(first, {"StartingPosition": "AT_TIMESTAMP",
                                                 "StartingPositionTimestamp": moment})
        assert status == 202, answer
        again = await _exactly(target, since, 50)
        assert sorted(n for _, n in again) == list(range(50, 100)), "the records written after the moment, once"
        assert _in_order_per_key(again)

        since = len(target.calls)
        env = {**os.environ, "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        env = {k: v for k, v in env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))}
        rewound = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "broker", "rewind", "--mapping", MAPPING, "--sequence", f"{shard}={seqs[89]}",
            "--endpoint", f"http://127.0.0.1:{first.api_port}"], capture_output=True, text=True, env=env,
            timeout=60, check=False)
        assert rewound.returncode == 0, rewound.stderr
        assert json.loads(rewound.stdout)["ShardSequenceNumbers"] == {shard: seqs[89]}
        again = await _exactly(target, since, 10)
        assert [n for _, n in again] == list(range(90, 100)), "resumed after record 89"


async def test_a_position_is_refused_with_a_reason(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    (shard,) = await create_stream(aws, "refusals")
    await aws.call("sqs", "create_queue", QueueName="plain")
    mappings = [{"UUID": MAPPING, "FunctionName": "f", "EventSourceArn": stream_arn("refusals"),
                 "StartingPosition": "LATEST"},
                {"UUID": "6f1a2b3c-0000-4000-8000-00000000aa02", "FunctionName": "f",
                 "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:plain"}]
    async with broker.run(function(target), mappings, **FAST) as app:
        cases = [
            ({}, 400, 'Give either "StartingPosition"'),
            ({"StartingPosition": "SOMEWHERE"}, 400, "Value 'SOMEWHERE' at 'startingPosition'"),
            ({"StartingPosition": "AT_TIMESTAMP"}, 400, "StartingPositionTimestamp must be given"),
            ({"StartingPosition": "LATEST", "StartingPositionTimestamp": 5}, 400, "only valid with"),
            ({"ShardSequenceNumbers": {shard: "12x"}}, 400, "strings of digits"),
            ({"ShardSequenceNumbers": {"shardId-999": "1"}}, 404, "Shards not found"),
        ]
        for body, status, words in cases:
            got, answer = await _position(app, body)
            assert (got, words in answer["message"]) == (status, True), (body, answer)
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{app.api_port}/broker/v1/mappings"
            async with http.post(f"{base}/6f1a2b3c-0000-4000-8000-00000000aa02/position",
                                 json={"StartingPosition": "LATEST"}) as resp:
                assert resp.status == 400
                assert "reads an SQS queue" in (await resp.json())["message"]
            async with http.post(f"{base}/00000000-0000-4000-8000-000000000000/position",
                                 json={"StartingPosition": "LATEST"}) as resp:
                assert resp.status == 404
                assert resp.headers["X-Amzn-ErrorType"].startswith("ResourceNotFoundException")
        got, answer = await _position(app, {"StartingPosition": "LATEST"})
        assert got == 202, answer
        assert answer["StartingPosition"] == "AT_TIMESTAMP", "LATEST is kept as the moment of the request"
