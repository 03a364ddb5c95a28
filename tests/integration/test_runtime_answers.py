"""What execution environments answer, seen from outside: function errors of any size, init errors
(never a throttle, with a backoff), LogType Tail with the invocation's own lines, and function
logs tagged with the invocation that printed them."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BrokerRunner, broker_settings, metric
from tests.integration.helpers import wait_until
from tests.servers import Aws, BrokerProcess, MotoServer, create_stream, put_records, queue_arn, stream_arn

ROOT = Path(__file__).resolve().parents[2]
TALKER = {"Target": {"Handler": "tests.handlers.talker:handler"}, "Timeout": 5}


async def _invoke(port: int, function: str, payload: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations", json=payload,
            headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


@pytest.mark.parametrize("size", [100, 8 * 1024, 100 * 1024, 900 * 1024])
async def test_function_errors_of_any_size_reach_the_caller(broker: BrokerRunner, size: int) -> None:
    """awslambdaric sends the error's X-Ray cause as a header; a big one must not end the environment."""
    async with broker.run({"f": TALKER}, []) as app:
        status, _, first = await _invoke(app.api_port, "f", {})
        assert status == 200, first
        status, headers, error = await _invoke(app.api_port, "f", {"fail_bytes": size})
        assert status == 200
        assert headers.get("X-Amz-Function-Error") == "Unhandled"
        assert error["errorType"] == "ValueError", error
        assert len(error["errorMessage"]) == size
        _, _, after = await _invoke(app.api_port, "f", {})
        assert after["pid"] == first["pid"], "the environment was not restarted"
        assert metric(app, "broker_cold_starts_total", function="f") == 1


@pytest.mark.parametrize("api_port", [False, True])
async def test_init_errors_are_the_runtimes_never_a_throttle(broker: BrokerRunner, api_port: bool) -> None:
    """A module that cannot be imported, with a Command alone and with a Command and a shared ApiPort:
    every invocation gets Runtime.ImportModuleError; environments are restarted with a backoff."""
    runtime: dict[str, Any] = {"Command": [sys.executable, "-m", "awslambdaric", "tests.handlers.broken_import.handler"],
                               "WorkingDirectory": str(ROOT), "Environment": {"Variables": {"PYTHONPATH": str(ROOT)}}}
    if api_port:
        runtime["ApiPort"] = 0
    async with broker.run({"f": {"Target": {"Runtime": runtime}, "Timeout": 3}}, []) as app:
        answers = []
        started = asyncio.get_running_loop().time()
        for _ in range(8):
            status, headers, body = await _invoke(app.api_port, "f", {})
            answers.append((status, headers.get("X-Amz-Function-Error"), body.get("errorType")))
        elapsed = asyncio.get_running_loop().time() - started
        failures = metric(app, "broker_init_failures_total", function="f")
    assert set(answers) == {(200, "Unhandled", "Runtime.ImportModuleError")}, answers
    assert elapsed < 20, "answered at once while backing off, not after the init timeout"
    assert 1 <= failures < 8, f"{failures} environments failed their init: restarts back off"


async def test_tail_holds_each_invocations_own_lines(broker: BrokerRunner) -> None:
    async with broker.run({"f": TALKER}, []) as app:
        for n in range(30):
            _, headers, body = await _invoke(app.api_port, "f", {"tag": f"t{n}"}, **{"X-Amz-Log-Type": "Tail"})
            tail = base64.b64decode(headers["X-Amz-Log-Result"]).decode()
            lines = tail.splitlines()
            assert lines[0].startswith(f"START RequestId: {body['request_id']}"), tail
            assert f"rid={body['request_id']} source=invoke tag=t{n}" in lines, tail
            assert lines[-2] == f"END RequestId: {body['request_id']}", tail
            assert lines[-1].startswith(f"REPORT RequestId: {body['request_id']}"), tail


async def test_function_logs_carry_their_invocations_tags(moto_server: MotoServer, aws: Aws, redis_server: Any,
                                                          tmp_path: Path) -> None:
    """Three sources on one Handler function in a real `broker run`: every line the function printed
    is logged with the request id that printed it and the mapping (and shard) of its own source."""
    url = await aws.create_queue("talk", VisibilityTimeout=30)
    await create_stream(aws, "talk", 1)
    table = await aws.call("dynamodb", "create_table", TableName="talk",
                           KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST",
                           StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    ids = {"aws:sqs": str(uuid.uuid4()), "aws:kinesis": str(uuid.uuid4()), "aws:dynamodb": str(uuid.uuid4())}
    config = {
        "broker": broker_settings(redis_server, moto_server, tmp_path, kinesis_poll_interval_seconds=0.2,
                                  dynamodb_poll_interval_seconds=0.2, kinesis_min_read_interval_seconds=0),
        "functions": {"f": {**TALKER, "Environment": {"Variables": {"PYTHONPATH": str(ROOT)}}}},
        "event_source_mappings": [
            {"UUID": ids["aws:sqs"], "FunctionName": "f", "EventSourceArn": queue_arn("talk"), "BatchSize": 1},
            {"UUID": ids["aws:kinesis"], "FunctionName": "f", "EventSourceArn": stream_arn("talk"),
             "StartingPosition": "TRIM_HORIZON", "BatchSize": 1},
            {"UUID": ids["aws:dynamodb"], "FunctionName": "f",
             "EventSourceArn": table["TableDescription"]["LatestStreamArn"], "StartingPosition": "TRIM_HORIZON",
             "BatchSize": 1},
        ],
    }
    broker = BrokerProcess(config, tmp_path)
    await asyncio.to_thread(broker.start)
    try:
        for n in range(10):
            await aws.send(url, f"m{n}")
            await put_records(aws, "talk", [(f"k{n}", b"{}")])
            await aws.call("dynamodb", "put_item", TableName="talk", Item={"id": {"S": f"i{n}"}})

        def printed() -> list[dict[str, Any]]:
            return [d for d in broker.log_lines() if d.get("event") == "function_log"
                    and str(d.get("message", "")).startswith("rid=")]

        await wait_until(lambda: len(printed()) >= 30, timeout=60)
    finally:
        broker.stop()
    lines = printed()
    wrong = []
    for line in lines:
        rid, source = (part.split("=", 1)[1] for part in line["message"].split()[:2])
        if line.get("request_id") != rid or line.get("mapping") != ids[source]:
            wrong.append(line)
        if source != "aws:sqs" and not str(line.get("shard", "")).startswith("shardId-"):
            wrong.append(line)
        if source == "aws:sqs" and "shard" in line:
            wrong.append(line)
    assert not wrong, json.dumps(wrong[:5])


async def test_every_line_printed_before_the_answer_is_the_invocations(moto_server: MotoServer, redis_server: Any,
                                                                      tmp_path: Path) -> None:
    """Under `broker run` (uvloop), a handler that prints 2,000 lines and returns: every line is
    logged with the request id that printed it, none as the environment's own after the answer."""
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path),
              "functions": {"f": {**TALKER, "Environment": {"Variables": {"PYTHONPATH": str(ROOT)}}}},
              "event_source_mappings": []}
    broker = BrokerProcess(config, tmp_path)
    await asyncio.to_thread(broker.start)
    try:
        request_ids = []
        for _ in range(5):
            status, _, body = await _invoke(broker.port, "f", {"lines": 2000})
            assert status == 200, body
            request_ids.append(body["request_id"])
    finally:
        broker.stop()
    printed = [d for d in broker.log_lines() if d.get("event") == "function_log"
               and str(d.get("message", "")).startswith("line ")]
    assert len(printed) == 5 * 2000
    wrong = [d for d in printed if d.get("request_id") != d["message"].split()[1]]
    assert not wrong, wrong[:3]
