"""IsolateFailingKeys: a poison record parks only its own key. One shard, 10 keys x 30 records, the
5th record of one key fails until it is fixed: the other keys' records arrive meanwhile, the bad
key's records arrive in order once fixed, per-key order holds for every key, and a SIGKILL while
the key is parked loses and reorders nothing."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker.embedded import RedisServer
from tests.conftest import BrokerRunner, broker_settings, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import Aws, BrokerProcess, Call, MotoServer, RecordingTarget, create_stream, put_records, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1, "retry_backoff_base_seconds": 0.1,
        "retry_backoff_max_seconds": 0.4}
MAPPING = "6f1a2b3c-0000-4000-8000-00000000bb0{}"  # one per test: checkpoints stay in Redis between tests
KEYS, PER_KEY, BAD = 10, 30, ("key-3", 4)


class PoisonTarget:
    """Answers batches as a function with ReportBatchItemFailures would: the bad record fails
    until ``fixed``; ``accepted`` is every (key, i) the function took, in the order it took them."""

    def __init__(self, *, whole_batch: bool = False) -> None:
        self.fixed = False
        self.whole_batch = whole_batch  # fail the whole batch (a function error), not the one item
        self.accepted: list[tuple[str, int]] = []

    def __call__(self, event: Any, call: Call) -> web.Response:
        items = [(r["kinesis"]["partitionKey"], json.loads(base64.b64decode(r["kinesis"]["data"]))["i"],
                  r["kinesis"]["sequenceNumber"]) for r in event.get("Records", [])]
        if self.whole_batch and not self.fixed and any((k, i) == BAD for k, i, _ in items):
            return respond_json({"errorType": "ValueError", "errorMessage": "poison"}, status=500)
        for key, i, seq in items:
            if (key, i) == BAD and not self.fixed:
                return respond_json({"batchItemFailures": [{"itemIdentifier": seq}]})
            self.accepted.append((key, i))
        return respond_json({})

    def of(self, key: str) -> list[int]:
        return [i for k, i in self.accepted if k == key]

    def first_seen(self) -> dict[str, list[int]]:
        """Each key's records in the order they were first taken (redeliveries after a crash left out)."""
        seen: set[tuple[str, int]] = set()
        out: dict[str, list[int]] = collections.defaultdict(list)
        for item in self.accepted:
            if item not in seen:
                seen.add(item)
                out[item[0]].append(item[1])
        return out


async def _put_all(aws: Aws, stream: str) -> None:
    await put_records(aws, stream, [(f"key-{k}", json.dumps({"i": i}).encode())
                                    for i in range(PER_KEY) for k in range(KEYS)])


def _uuid(stream: str) -> str:
    return MAPPING.format(["poisoned", "given-up", "killed", "bisected", "outage"].index(stream))


def _mapping(stream: str) -> dict[str, Any]:
    return {"UUID": _uuid(stream), "FunctionName": "f", "EventSourceArn": stream_arn(stream),
            "StartingPosition": "TRIM_HORIZON", "BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "IsolateFailingKeys": True}


def _good_keys_done(poison: PoisonTarget) -> bool:
    return all(poison.of(f"key-{k}") == list(range(PER_KEY)) for k in range(KEYS) if f"key-{k}" != BAD[0])


async def test_a_poison_record_parks_only_its_key(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    await create_stream(aws, "poisoned")
    await _put_all(aws, "poisoned")
    poison = PoisonTarget()
    target.responder = poison
    async with broker.run(function(target), [_mapping("poisoned")], **FAST) as app:
        await wait_until(lambda: _good_keys_done(poison), timeout=60)
        assert poison.of(BAD[0]) == [0, 1, 2, 3], "the bad key stops at its failing record"
        uuid = _uuid("poisoned")
        await wait_until(lambda: metric(app, "broker_parked_records", function="f", mapping=uuid) == PER_KEY - 4)
        assert metric(app, "broker_parked_keys", function="f", mapping=uuid) == 1
        poison.fixed = True
        await wait_until(lambda: poison.of(BAD[0]) == list(range(PER_KEY)), timeout=30)
        await wait_until(lambda: metric(app, "broker_parked_keys", function="f", mapping=uuid) == 0)
        assert metric(app, "broker_parked_records", function="f", mapping=uuid) == 0
        for k in range(KEYS):
            assert poison.of(f"key-{k}") == list(range(PER_KEY)), f"key-{k} once each, in order"


async def test_bisecting_finds_the_poison_record_and_parks_its_key(aws: Aws, broker: BrokerRunner,
                                                                   target: RecordingTarget) -> None:
    """Without partial batch responses: the function fails whole batches, bisecting names the
    record, its key is parked and the others go on."""
    await create_stream(aws, "bisected")
    await _put_all(aws, "bisected")
    poison = PoisonTarget(whole_batch=True)
    target.responder = poison
    m = {**_mapping("bisected"), "FunctionResponseTypes": [], "BisectBatchOnFunctionError": True}
    async with broker.run(function(target), [m], **FAST):
        await wait_until(lambda: _good_keys_done(poison), timeout=60)
        assert poison.of(BAD[0]) == [0, 1, 2, 3]
        poison.fixed = True
        await wait_until(lambda: poison.of(BAD[0]) == list(range(PER_KEY)), timeout=30)
        for k in range(KEYS):
            assert poison.of(f"key-{k}") == list(range(PER_KEY)), f"key-{k} once each, in order"


async def test_redis_away_while_a_key_is_parked(aws: Aws, moto_server: MotoServer, target: RecordingTarget,
                                                tmp_path: Path) -> None:
    """Redis stops while a key is parked and its record keeps failing: the broker stays up and says
    so on /readyz; with Redis back and the function fixed, the key drains in order."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    await create_stream(aws, "outage")
    await _put_all(aws, "outage")
    poison = PoisonTarget()
    target.responder = poison
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path, **FAST),
              "functions": function(target), "event_source_mappings": [_mapping("outage")]}
    proc = BrokerProcess(config, tmp_path)
    proc.start()
    try:
        await wait_until(lambda: _good_keys_done(poison), timeout=60)
        redis_server.stop()
        await asyncio.sleep(2)  # the outage: the parked key's retries cannot be written
        assert proc.returncode is None, "the broker exited during the Redis outage"
        async with aiohttp.ClientSession() as http, http.get(f"{proc.url}/readyz") as resp:
            assert resp.status == 503
            assert "redis" in (await resp.text()).lower()
        poison.fixed = True
        redis_server = RedisServer(redis_server.data_dir, port=redis_server.port)  # same port, same AOF
        redis_server.start()
        await wait_until(lambda: poison.first_seen().get(BAD[0], []) == list(range(PER_KEY)), timeout=60)
        assert proc.returncode is None
        seen = poison.first_seen()
        for k in range(KEYS):
            assert seen[f"key-{k}"] == list(range(PER_KEY)), f"key-{k}: nothing lost, in order"
    finally:
        proc.stop()
        redis_server.stop()


async def test_a_key_given_up_goes_on_with_its_next_record(aws: Aws, broker: BrokerRunner,
                                                          target: RecordingTarget) -> None:
    """MaximumRetryAttempts applies per parked record: the poison record goes to the quarantine and
    its key's later records follow."""
    await create_stream(aws, "given-up")
    await _put_all(aws, "given-up")
    poison = PoisonTarget()
    target.responder = poison
    m = {**_mapping("given-up"), "MaximumRetryAttempts": 2}
    async with broker.run(function(target), [m], **FAST) as app:
        await wait_until(lambda: len(poison.accepted) == KEYS * PER_KEY - 1, timeout=60)
        assert poison.of(BAD[0]) == [i for i in range(PER_KEY) if i != BAD[1]]
        assert metric(app, "broker_quarantined_records_total", function="f", mapping=_uuid("given-up")) == 1
        calls_of_bad = sum(1 for c in target.calls for r in c.event["Records"]
                           if r["kinesis"]["partitionKey"] == BAD[0]
                           and json.loads(base64.b64decode(r["kinesis"]["data"]))["i"] == BAD[1])
        assert calls_of_bad == 3, "the first try and two retries"


async def test_sigkill_while_a_key_is_parked_loses_and_reorders_nothing(
        aws: Aws, moto_server: MotoServer, redis_server: RedisServer, target: RecordingTarget, tmp_path: Path) -> None:
    await create_stream(aws, "killed")
    await _put_all(aws, "killed")
    poison = PoisonTarget()
    target.responder = poison
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path, **FAST, lease_ttl_seconds=3),
              "functions": function(target), "event_source_mappings": [_mapping("killed")]}
    first = BrokerProcess(config, tmp_path, name="first")
    first.start()
    try:
        await wait_until(lambda: _good_keys_done(poison), timeout=60)
        await asyncio.sleep(0.5)  # a few retries of the parked key
        first.signal(signal.SIGKILL)
        await wait_until(lambda: first.returncode is not None, timeout=10)
    finally:
        first.stop()
    await put_records(aws, "killed", [(BAD[0], json.dumps({"i": PER_KEY}).encode())])  # one more while down
    poison.fixed = True
    second = BrokerProcess(config, tmp_path, name="second")
    second.start()
    try:
        await wait_until(lambda: poison.first_seen().get(BAD[0], []) == list(range(PER_KEY + 1)), timeout=60)
        seen = poison.first_seen()
        for k in range(KEYS):
            assert seen[f"key-{k}"][:PER_KEY] == list(range(PER_KEY)), f"key-{k}: nothing lost, in order"
        after = poison.accepted[poison.accepted.index((BAD[0], BAD[1])):]
        bad_after = [i for k, i in after if k == BAD[0]]
        assert bad_after == list(range(BAD[1], PER_KEY + 1)), "the parked key resumes in order, once each"
    finally:
        second.stop()


async def test_isolation_needs_a_rule_that_names_the_failing_record(broker: BrokerRunner,
                                                                    target: RecordingTarget) -> None:
    async with broker.run(function(target), []) as app, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{app.api_port}/2015-03-31/event-source-mappings"
        body = {"FunctionName": "f", "EventSourceArn": stream_arn("nowhere"), "StartingPosition": "LATEST",
                "IsolateFailingKeys": True}
        async with http.post(base, json=body) as resp:
            assert resp.status == 400
            answer = await resp.json()
            assert answer["Type"] == "User"
            assert "IsolateFailingKeys needs FunctionResponseTypes [ReportBatchItemFailures] or " \
                   "BisectBatchOnFunctionError" in answer["message"]
        async with http.post(base, json={**body, "BisectBatchOnFunctionError": True,
                                         "TumblingWindowInSeconds": 60}) as resp:
            assert resp.status == 400
            assert "cannot be used with TumblingWindowInSeconds" in (await resp.json())["message"]
