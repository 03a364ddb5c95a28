"""The quarantine keeps what was given up, with its payload: a stream record after its retries, an
async event after its retries; listed and discarded through the broker's own API, which lambda:*
does not open; bounded by count."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.embedded import RedisServer
from tests.conftest import BrokerRunner, broker_settings, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import Aws, BrokerProcess, Call, MotoServer, RecordingTarget, create_stream, put_records, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1, "async_retry_delays_seconds": [0.2, 0.4]}
MAPPING = "6f1a2b3c-0000-4000-8000-000000000001"


def _numbers(event: dict[str, Any]) -> list[int]:
    return [json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event.get("Records", [])]


def _fails_on(bad: int) -> Any:
    def answer(event: Any, call: Call) -> web.Response:
        if bad in _numbers(event) or event.get("n") == bad:
            return respond_json({"errorMessage": f"cannot take {bad}", "errorType": "ValueError"}, status=500)
        return respond_json({})
    return answer


def _fails_on_any(bad: set[int]) -> Any:
    def answer(event: Any, call: Call) -> web.Response:
        if bad & set(_numbers(event)):
            return respond_json({"errorMessage": "not yet", "errorType": "ValueError"}, status=500)
        return respond_json({})
    return answer


async def _given_up_events(app: Any, count: int) -> None:
    """``count`` Event invokes of ``{"n": 7, "i": i}``, waited for until each is in the quarantine."""
    async with aiohttp.ClientSession() as http:
        for i in range(count):
            async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations",
                                 data=json.dumps({"n": 7, "i": i}), headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                assert resp.status == 202
    await wait_until(lambda: metric(app, "broker_quarantined_records_total", function="f", mapping="") == count,
                     timeout=30)


async def _call(app: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{app.api_port}{path}", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_stream_record_given_up_is_kept_with_its_data_then_discarded(
        aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    shard = (await create_stream(aws, "poison"))[0]
    seqs = await put_records(aws, "poison", [("k", json.dumps({"n": n}).encode()) for n in range(4)])
    target.responder = _fails_on(2)
    m = {"FunctionName": "f", "EventSourceArn": stream_arn("poison"), "StartingPosition": "TRIM_HORIZON",
         "BatchSize": 10, "MaximumRetryAttempts": 1, "BisectBatchOnFunctionError": True}
    async with broker.run(function(target), [m], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        path = f"/broker/v1/mappings/{uuid}/quarantine"
        await wait_until(lambda: metric(app, "broker_quarantined_records_total", function="f", mapping=uuid) == 1)
        status, page = await _call(app, "GET", path)
        assert status == 200, page
        (entry,) = page["Records"]
        assert "NextMarker" not in page
        assert entry["Id"] == f"{shard}:{seqs[2]}"
        assert entry["Reason"] == "RetryAttemptsExhausted"
        assert entry["Attempts"] == 2
        assert entry["LastError"] == {"errorType": "ValueError", "errorMessage": "cannot take 2", "status": 500}
        assert (entry["ShardId"], entry["SequenceNumber"], entry["PartitionKey"]) == (shard, seqs[2], "k")
        assert json.loads(base64.b64decode(entry["Record"]["kinesis"]["data"])) == {"n": 2}
        assert entry["Record"]["eventSource"] == "aws:kinesis"
        succeeded = {n for c in target.calls if 2 not in _numbers(c.event) for n in _numbers(c.event)}
        assert succeeded == {0, 1, 3}, "the shard went on past the given-up record"

        status, refused = await _call(app, "POST", path + "/discard", {"Ids": ["nope"]})
        assert status == 404, refused
        assert refused["message"] == "Quarantine entries not found: nope"
        status, done = await _call(app, "POST", path + "/discard", {"Ids": [entry["Id"]]})
        assert (status, done) == (200, {"Discarded": 1})
        status, page = await _call(app, "GET", path)
        assert (status, page["Records"]) == (200, [])
        status, wrong = await _call(app, "GET", "/broker/v1/mappings/00000000-0000-0000-0000-000000000000/quarantine")
        assert status == 404, wrong


async def test_an_async_event_given_up_is_kept_and_pages_oldest_first(broker: BrokerRunner,
                                                                     target: RecordingTarget) -> None:
    target.responder = _fails_on(7)
    async with broker.run(function(target), [], **FAST, quarantine_max_records=2) as app:
        await _given_up_events(app, 3)  # three requests, each given up after its two retries; the bound keeps two
        assert metric(app, "broker_quarantine_evicted_records_total", function="f", mapping="") == 1
        status, first = await _call(app, "GET", "/broker/v1/functions/f/quarantine?MaxItems=1")
        assert status == 200, first
        (one,) = first["Records"]
        assert one["Reason"] == "RetriesExhausted"
        assert one["Attempts"] == 3
        assert one["Record"]["n"] == 7
        assert one["LastError"]["errorMessage"] == "cannot take 7"
        marker = first["NextMarker"]
        status, second = await _call(app, "GET", f"/broker/v1/functions/f/quarantine?MaxItems=1&Marker={marker}")
        assert status == 200, second
        assert len(second["Records"]) == 1
        assert "NextMarker" not in second
        assert second["Records"][0]["Id"] != one["Id"]
        status, done = await _call(app, "POST", "/broker/v1/functions/f/quarantine/discard", {"All": True})
        assert (status, done) == (200, {"Discarded": 2})
        status, bad = await _call(app, "POST", "/broker/v1/functions/f/quarantine/discard", {"Ids": []})
        assert status == 400, bad
        status, unknown = await _call(app, "GET", "/broker/v1/functions/nobody/quarantine")
        assert status == 404, unknown


def _signed(method: str, url: str, key: str, secret: str) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=b"", headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers)


async def test_lambda_star_does_not_open_the_quarantine(broker: BrokerRunner, target: RecordingTarget) -> None:
    api = {"host": "127.0.0.1", "port": 0, "credentials": [
        {"AccessKeyId": "developer", "SecretAccessKey": "s3cret-dev"},  # lambda:* (the default)
        {"AccessKeyId": "operator", "SecretAccessKey": "s3cret-op", "Actions": ["broker:ListQuarantine"]}]}
    async with broker.run(function(target), [], api=api) as app:
        url = f"http://127.0.0.1:{app.api_port}/broker/v1/functions/f/quarantine"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=_signed("GET", url, "developer", "s3cret-dev")) as resp:
                assert resp.status == 403
                assert resp.headers["X-Amzn-ErrorType"] == "AccessDeniedException"
                assert "broker:ListQuarantine" in (await resp.json())["message"]
            async with http.get(url, headers=_signed("GET", url, "operator", "s3cret-op")) as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.json() == {"Records": []}
            discard = url + "/discard"
            async with http.post(discard, headers=_signed("POST", discard, "operator", "s3cret-op")) as resp:
                assert resp.status == 403, "ListQuarantine does not grant DiscardQuarantine"
            rewind = f"http://127.0.0.1:{app.api_port}/broker/v1/mappings/{MAPPING}/position"
            async with http.post(rewind, headers=_signed("POST", rewind, "developer", "s3cret-dev")) as resp:
                assert resp.status == 403
                assert "broker:SetPosition" in (await resp.json())["message"]


async def test_replayed_stream_records_leave_the_quarantine_in_order_per_key(
        aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Records of two keys given up; replayed once the target is fixed, each key's records arrive in
    their order and leave the quarantine; one that fails again stays with Attempts + 1 and holds back
    the later records of its key."""
    await create_stream(aws, "replayed")
    await put_records(aws, "replayed", [(key, json.dumps({"n": n}).encode()) for n, key in
                                        enumerate(["a", "b", "a", "b", "a"])])
    target.responder = _fails_on_any(set(range(5)))
    m = {"FunctionName": "f", "EventSourceArn": stream_arn("replayed"), "StartingPosition": "TRIM_HORIZON",
         "BatchSize": 10, "MaximumRetryAttempts": 0}
    async with broker.run(function(target), [m], **FAST) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        path = f"/broker/v1/mappings/{uuid}/quarantine"
        await wait_until(lambda: metric(app, "broker_quarantined_records_total", function="f", mapping=uuid) == 5)
        target.calls.clear()
        target.responder = _fails_on_any({3})  # key b's second record still fails
        status, answer = await _call(app, "POST", path + "/replay", {"All": True})
        assert (status, answer) == (202, {"Replaying": 5})
        await wait_until(lambda: metric(app, "broker_quarantine_replays_total", function="f", mapping=uuid,
                                        outcome="succeeded") == 4)
        await wait_until(lambda: metric(app, "broker_quarantine_replays_total", function="f", mapping=uuid,
                                        outcome="failed") == 1)
        order: dict[str, list[int]] = {"a": [], "b": []}
        for c in target.calls:
            for r in c.event["Records"]:
                order[r["kinesis"]["partitionKey"]].append(json.loads(base64.b64decode(r["kinesis"]["data"]))["n"])
        assert order == {"a": [0, 2, 4], "b": [1, 3]}, "in order per key, and b stops at its failing record"
        status, page = await _call(app, "GET", path)
        (left,) = page["Records"]
        assert json.loads(base64.b64decode(left["Record"]["kinesis"]["data"])) == {"n": 3}
        assert left["Attempts"] == 2
        status, refused = await _call(app, "POST", path + "/replay", {"Ids": ["shardId-000000000000:1"]})
        assert status == 404, refused


async def test_a_replayed_async_event_runs_again_under_its_request_id(broker: BrokerRunner,
                                                                      target: RecordingTarget) -> None:
    target.responder = _fails_on(7)
    async with broker.run(function(target), [], **FAST) as app:
        await _given_up_events(app, 2)
        _, page = await _call(app, "GET", "/broker/v1/functions/f/quarantine")
        first, second = page["Records"]
        target.calls.clear()
        target.responder = None  # fixed
        status, answer = await _call(app, "POST", "/broker/v1/functions/f/quarantine/replay", {"Ids": [first["Id"]]})
        assert (status, answer) == (202, {"Replaying": 1})
        await target.wait_for(lambda calls: len(calls) == 1)
        assert target.calls[0].headers["Lambda-Runtime-Aws-Request-Id"] == first["Id"]
        assert target.calls[0].event == first["Record"]
        _, page = await _call(app, "GET", "/broker/v1/functions/f/quarantine")
        assert [e["Id"] for e in page["Records"]] == [second["Id"]]
        target.responder = _fails_on(7)  # broken again: back in the quarantine, its attempts added up
        status, answer = await _call(app, "POST", "/broker/v1/functions/f/quarantine/replay", {"All": True})
        assert (status, answer) == (202, {"Replaying": 1})
        await wait_until(lambda: metric(app, "broker_quarantined_records_total", function="f", mapping="") == 3,
                         timeout=30)
        _, page = await _call(app, "GET", "/broker/v1/functions/f/quarantine")
        (back,) = page["Records"]
        assert (back["Id"], back["Attempts"]) == (second["Id"], 6)


async def test_the_command_line_lists_replays_and_discards_signed(broker: BrokerRunner, target: RecordingTarget,
                                                                  tmp_path: Path) -> None:
    """``broker quarantine`` signs with the default credential chain (here the environment's key)."""
    api = {"host": "127.0.0.1", "port": 0, "credentials": [
        {"AccessKeyId": "operator", "SecretAccessKey": "s3cret-op", "Actions": ["broker:*", "lambda:InvokeFunction"]}]}
    target.responder = _fails_on(7)
    async with broker.run(function(target), [], api=api, **FAST) as app:
        endpoint = f"http://127.0.0.1:{app.api_port}"
        url = f"{endpoint}/2015-03-31/functions/f/invocations"
        for i in range(2):
            body = json.dumps({"n": 7, "i": i}).encode()
            request = AWSRequest(method="POST", url=url, data=body, headers={"X-Amz-Invocation-Type": "Event"})
            SigV4Auth(Credentials("operator", "s3cret-op"), "lambda", "us-east-1").add_auth(request)
            async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=dict(request.headers)) as r:
                assert r.status == 202, await r.text()
        await wait_until(lambda: metric(app, "broker_quarantined_records_total", function="f", mapping="") == 2,
                         timeout=30)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "operator", "AWS_SECRET_ACCESS_KEY": "s3cret-op",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "broker", "quarantine", *args, "--function", "f",
                                   "--endpoint", endpoint, "--max-items", "1"],
                                  capture_output=True, text=True, env=env, timeout=60, check=False)

        listed = await asyncio.to_thread(cli, "list")
        assert listed.returncode == 0, listed.stderr
        entries = [json.loads(line) for line in listed.stdout.splitlines()]
        assert sorted(e["Record"]["i"] for e in entries) == [0, 1], "every page (one entry each)"
        assert entries[0]["QuarantinedAt"] <= entries[1]["QuarantinedAt"], "oldest first"
        target.responder = None
        replayed = await asyncio.to_thread(cli, "replay", entries[0]["Id"])
        assert (replayed.returncode, json.loads(replayed.stdout)) == (0, {"Replaying": 1}), replayed.stderr
        await target.wait_for(lambda calls: any(c.event == entries[0]["Record"] and c.headers[
            "Lambda-Runtime-Aws-Request-Id"] == entries[0]["Id"] for c in calls))
        refused = await asyncio.to_thread(cli, "discard", "no-such-entry")
        assert refused.returncode == 1
        assert "Quarantine entries not found: no-such-entry" in refused.stderr
        discarded = await asyncio.to_thread(cli, "discard", "--all")
        assert (discarded.returncode, json.loads(discarded.stdout)) == (0, {"Discarded": 1}), discarded.stderr
        unsigned = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "broker", "quarantine", "list", "--function", "f", "--endpoint", endpoint],
            capture_output=True, text=True, timeout=60, check=False,
            env={k: v for k, v in env.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")})
        assert unsigned.returncode == 1
        assert "403" in unsigned.stderr


async def test_redis_away_when_a_record_is_given_up_keeps_it_once_back(
        aws: Aws, moto_server: MotoServer, target: RecordingTarget, tmp_path: Path) -> None:
    """Redis stops the moment the function fails a record that has no retries left: the broker stays
    up, the shard waits, and once Redis is back the record is in the quarantine and the shard goes on."""
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    await create_stream(aws, "outage")
    stopped: list[bool] = []

    def fail_and_stop_redis(event: Any, call: Call) -> web.Response:
        if 1 in _numbers(event):
            if not stopped:
                redis_server.stop()
                stopped.append(True)
            return respond_json({"errorMessage": "cannot take 1", "errorType": "ValueError"}, status=500)
        return respond_json({})

    target.responder = fail_and_stop_redis
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path, **FAST),
              "functions": function(target),
              "event_source_mappings": [{"UUID": MAPPING, "FunctionName": "f", "EventSourceArn": stream_arn("outage"),
                                         "StartingPosition": "TRIM_HORIZON", "MaximumRetryAttempts": 0}]}
    broker = BrokerProcess(config, tmp_path)
    broker.start()
    path = f"{broker.url}/broker/v1/mappings/{MAPPING}/quarantine"
    try:
        await put_records(aws, "outage", [("k", json.dumps({"n": 1}).encode())])
        await wait_until(lambda: bool(stopped), timeout=30)
        await asyncio.sleep(3)  # the outage: the give-up waits for Redis
        assert broker.returncode is None, "the broker exited during the Redis outage"
        async with aiohttp.ClientSession() as http, http.get(path) as resp:
            assert resp.status == 503, "the quarantine cannot be read while Redis is away"
        redis_server = RedisServer(redis_server.data_dir, port=redis_server.port)  # same port, same AOF
        redis_server.start()

        async def kept() -> bool:
            async with aiohttp.ClientSession() as http, http.get(path) as resp:
                return resp.status == 200 and len((await resp.json())["Records"]) == 1
        await wait_until(kept, timeout=60)
        await put_records(aws, "outage", [("k", json.dumps({"n": 2}).encode())])
        await target.wait_for(lambda calls: any(_numbers(c.event) == [2] for c in calls), timeout=30)
        assert broker.returncode is None
    finally:
        broker.stop()
        redis_server.stop()
