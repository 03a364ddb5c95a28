"""The quarantine keeps what was given up, with its payload: a stream record after its retries, an
async event after its retries; listed and discarded through the broker's own API, which lambda:*
does not open; bounded by count."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import Aws, Call, RecordingTarget, create_stream, put_records, stream_arn

FAST = {"kinesis_poll_interval_seconds": 0.2, "kinesis_min_read_interval_seconds": 0.0,
        "stream_discovery_interval_seconds": 1, "async_retry_delays_seconds": [0.2, 0.4]}


def _numbers(event: dict[str, Any]) -> list[int]:
    return [json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event.get("Records", [])]


def _fails_on(bad: int) -> Any:
    def answer(event: Any, call: Call) -> web.Response:
        if bad in _numbers(event) or event.get("n") == bad:
            return respond_json({"errorMessage": f"cannot take {bad}", "errorType": "ValueError"}, status=500)
        return respond_json({})
    return answer


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
        async with aiohttp.ClientSession() as http:
            for i in range(3):  # three requests, each given up after its two retries; the bound keeps two
                async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations",
                                     data=json.dumps({"n": 7, "i": i}),
                                     headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                    assert resp.status == 202
        await wait_until(lambda: metric(app, "broker_quarantined_records_total", function="f", mapping="") == 3,
                         timeout=30)
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
