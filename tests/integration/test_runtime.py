"""Execution environments through Lambda's Runtime API, with unmodified awslambdaric processes:
managed ones (the broker starts them) and external ones (the test starts them), behind SQS,
Kinesis, sync and Event invokes; one invocation at a time per environment, timeouts that stop the
handler, exits and import errors with Lambda's error types, cold starts and LogType Tail."""

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

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import wait_until
from tests.servers import Aws, queue_arn, stream_arn

ROOT = Path(__file__).resolve().parents[2]


async def _invoke(app: Any, payload: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations", json=payload,
            headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def test_module_level_batch_processor_is_safe(aws: Aws, broker: BrokerRunner, tmp_path: Path) -> None:
    """Powertools' module-level BatchProcessor under 6 concurrent SQS batches: no failing message is
    deleted (all 20 reach the DLQ), every good one is processed exactly once."""
    dlq = await aws.create_queue("batch-dlq")
    dlq_arn = queue_arn("batch-dlq")
    url = await aws.create_queue("batch", VisibilityTimeout=4,
                                 RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    bodies = [f"bad-{i}" if i % 10 == 3 else f"good-{i}" for i in range(200)]
    await aws.send_batch(url, bodies)
    records = tmp_path / "records.jsonl"
    records.touch()
    functions = {"f": {"Target": {"Handler": "tests.handlers.batch:handler"}, "Timeout": 3,
                       "Environment": {"Variables": {"RECORD_FILE": str(records)}}}}
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("batch"), "BatchSize": 10,
               "FunctionResponseTypes": ["ReportBatchItemFailures"]}
    async with broker.run(functions, [mapping], sqs_initial_pollers=6, sqs_min_pollers=6) as app:
        def processed() -> list[dict[str, Any]]:
            return [json.loads(line) for line in records.read_text().splitlines()]

        await wait_until(lambda: len({r["body"] for r in processed()}) >= 180, timeout=60)
        in_dlq = await aws.drain(dlq, 20, timeout=40)
        pids = {r["pid"] for r in processed()}
        cold = metric(app, "broker_cold_starts_total", function="f")
    good = [r["body"] for r in processed()]
    assert sorted(good) == sorted(b for b in bodies if b.startswith("good")), "each good message exactly once"
    assert sorted(m["Body"] for m in in_dlq) == sorted(b for b in bodies if b.startswith("bad"))
    assert len(pids) >= 2, "batches ran in several environments at once"
    assert cold >= len(pids)  # each environment's first invocation was a cold start


async def test_timeout_replaces_the_environment_and_stops_the_handler(broker: BrokerRunner, tmp_path: Path) -> None:
    functions = {"f": {"Target": {"Handler": "tests.handlers.behaviours:handler"}, "Timeout": 1,
                       "Environment": {"Variables": {"MARK_DIR": str(tmp_path)}}}}
    async with broker.run(functions, []) as app:
        status, _, first = await _invoke(app, {"id": "warm"})
        assert status == 200
        assert first["calls"] == 1
        assert first["function"] == "f"
        assert first["log_group"] == "/aws/lambda/f"
        assert first["log_stream"].endswith("]" + first["log_stream"].split("]")[-1])
        assert 0 < first["remaining_ms"] <= 1000
        status, headers, body = await _invoke(app, {"id": "slow", "sleep": 3})
        assert headers.get("X-Amz-Function-Error") == "Unhandled"
        assert body["errorType"] == "Sandbox.Timedout"
        assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
        _, _, after = await _invoke(app, {"id": "next"})
        assert after["pid"] != first["pid"], "the timed-out environment was replaced"
        assert after["calls"] == 1, "a new environment: fresh module state"
        await asyncio.sleep(2.5)
    assert (tmp_path / "started-slow").exists()
    assert not (tmp_path / "finished-slow").exists(), "the handler kept running past its timeout"


async def test_exit_and_import_errors_are_lambdas(broker: BrokerRunner, tmp_path: Path) -> None:
    # A Handler that cannot be imported is refused at start (as validate refuses it); a Runtime
    # command's imports are the runtime's own business, so its error reaches the invocation.
    functions = {"f": {"Target": {"Handler": "tests.handlers.behaviours:handler"}, "Timeout": 5},
                 "g": {"Target": {"Runtime": {
                     "Command": [sys.executable, "-m", "awslambdaric", "tests.handlers.no_such_module.handler"],
                     "WorkingDirectory": str(ROOT)}}, "Timeout": 5}}
    async with broker.run(functions, []) as app:
        status, headers, body = await _invoke(app, {"id": "x", "exit": True})
        assert status == 200
        assert headers.get("X-Amz-Function-Error") == "Unhandled"
        assert body["errorType"] == "Runtime.ExitError"
        assert "exit status 3" in body["errorMessage"]
        _, headers, body = await _invoke(app, {"id": "y", "fail": True})
        assert body["errorType"] == "RuntimeError"
        assert body["errorMessage"] == "asked to fail"
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/g/invocations", json={}) as resp:
            assert resp.status == 200
            assert resp.headers.get("X-Amz-Function-Error") == "Unhandled"
            error = await resp.json(content_type=None)
        assert error["errorType"] == "Runtime.ImportModuleError"


async def test_environment_killed_mid_invocation(broker: BrokerRunner, tmp_path: Path) -> None:
    functions = {"f": {"Target": {"Handler": "tests.handlers.behaviours:handler"}, "Timeout": 10,
                       "Environment": {"Variables": {"MARK_DIR": str(tmp_path)}}}}
    async with broker.run(functions, []) as app:
        call = asyncio.create_task(_invoke(app, {"id": "victim", "sleep": 8}))
        await wait_until((tmp_path / "started-victim").exists, timeout=20)
        os.kill(int((tmp_path / "started-victim").read_text()), signal.SIGKILL)
        _, headers, body = await asyncio.wait_for(call, 10)
        assert headers.get("X-Amz-Function-Error") == "Unhandled"
        assert body["errorType"] == "Runtime.ExitError"
        status, _, _ = await _invoke(app, {"id": "after"})
        assert status == 200


async def test_log_tail_and_cold_start(broker: BrokerRunner) -> None:
    functions = {"f": {"Target": {"Handler": "tests.handlers.behaviours:handler"}, "Timeout": 5}}
    async with broker.run(functions, []) as app:
        _, headers, body = await _invoke(app, {"id": "tail-me"}, **{"X-Amz-Log-Type": "Tail"})
        tail = base64.b64decode(headers["X-Amz-Log-Result"]).decode()
        assert f"START RequestId: {body['request_id']}" in tail
        assert "handled tail-me in" in tail
        assert "Init Duration:" in tail  # the first invocation of an environment includes its init
        _, headers, _ = await _invoke(app, {"id": "warm"}, **{"X-Amz-Log-Type": "Tail"})
        assert "Init Duration:" not in base64.b64decode(headers["X-Amz-Log-Result"]).decode()
        assert metric(app, "broker_cold_starts_total", function="f") == 1
        assert metric(app, "broker_warm_starts_total", function="f") == 1
        assert metric(app, "broker_init_duration_seconds_count", function="f") == 1


@pytest.fixture
def external_env(tmp_path: Path) -> Any:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}", "AWS_LAMBDA_FUNCTION_NAME": "f",
               "MARK_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "awslambdaric", "tests.handlers.behaviours.handler"],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


async def test_external_environments_serve_sync_event_and_kinesis(aws: Aws, broker: BrokerRunner, external_env: Any,
                                                                  tmp_path: Path) -> None:
    """Unmodified awslambdaric processes started by the test, pointed at the function's Runtime API port."""
    await aws.call("kinesis", "create_stream", StreamName="ext", ShardCount=1)
    functions = {"f": {"Target": {"Runtime": {"ApiPort": 0}}, "Timeout": 5}}
    mapping = {"FunctionName": "f", "EventSourceArn": stream_arn("ext"), "StartingPosition": "TRIM_HORIZON"}
    async with broker.run(functions, [mapping], kinesis_poll_interval_seconds=0.2,
                          kinesis_min_read_interval_seconds=0) as app:
        port = app.runtimes["f"].port
        assert port
        first, second = external_env(port), external_env(port)
        status, _, body = await _invoke(app, {"id": "sync"})
        assert status == 200
        assert body["pid"] in (first.pid, second.pid)
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations", json={"id": "event"},
                headers={"X-Amz-Invocation-Type": "Event"}) as resp:
            assert resp.status == 202
        await aws.call("kinesis", "put_record", StreamName="ext", PartitionKey="k", Data=b'{"n": 1}')
        await wait_until(lambda: metric(app, "broker_invocations_total", function="f") >= 3, timeout=20)
        assert metric(app, "broker_errors_total", function="f") == 0
        second.kill()
        second.wait()
        for n in range(3):  # the one left serves everything, one invocation at a time
            status, _, body = await _invoke(app, {"id": f"after-{n}"})
            assert status == 200
            assert body["pid"] == first.pid


async def test_two_replicas_with_environments_on_one(aws: Aws, redis_server: Any, moto_server: Any, external_env: Any,
                                                     tmp_path: Path) -> None:
    """Environments connected to replica A only serve invocations made on replica B (through Redis);
    when A stops while one of B's Event invokes is in an A-connected environment, the event is
    retried and runs once an environment connects to B."""
    functions = {"f": {"Target": {"Runtime": {"ApiPort": 0}}, "Timeout": 3,
                       "Environment": {"Variables": {"MARK_DIR": str(tmp_path)}}}}
    settings = {"runtime_init_timeout_seconds": 1, "async_retry_delays_seconds": [0.2]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a_runner = BrokerRunner(redis_server, moto_server, tmp_path / "a")
    b_runner = BrokerRunner(redis_server, moto_server, tmp_path / "b")
    async with b_runner.run(functions, [], replica_id="b", **settings) as b:
        async with a_runner.run(functions, [], replica_id="a", **settings) as a:
            env_on_a = external_env(a.runtimes["f"].port)
            for n in range(3):
                status, _, body = await _invoke(b, {"id": f"via-redis-{n}"})
                assert status == 200, body
                assert body["pid"] == env_on_a.pid
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{b.api_port}/2015-03-31/functions/f/invocations",
                    json={"id": "orphan", "sleep": 2}, headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                assert resp.status == 202
            await wait_until((tmp_path / "started-orphan").exists, timeout=20)
        # A is gone, and with it the only environment's connection: B's event must not be lost
        env_on_b = external_env(b.runtimes["f"].port)
        await wait_until(lambda: _ran_on(tmp_path, env_on_b.pid), timeout=40)
        assert metric(b, "broker_system_errors_total", function="f") >= 1  # the lost run counted as a system error


def _ran_on(marks: Path, pid: int) -> bool:
    started = marks / "started-orphan"
    return started.exists() and started.read_text() == str(pid)


async def test_dynamodb_stream_and_kinesis_in_managed_environments(aws: Aws, broker: BrokerRunner,
                                                                    tmp_path: Path) -> None:
    """Stream batches run in managed environments like any other invocation."""
    from tests.integration.test_dynamodb_streams import create_table  # noqa: PLC0415

    arn = await create_table(aws, "orders")
    await aws.call("kinesis", "create_stream", StreamName="clicks", ShardCount=1)
    records = tmp_path / "records.jsonl"
    records.touch()
    functions = {"f": {"Target": {"Handler": "tests.handlers.recorder:handler"}, "Timeout": 5,
                       "Environment": {"Variables": {"RECORD_FILE": str(records)}}}}
    mappings = [{"FunctionName": "f", "EventSourceArn": arn, "StartingPosition": "TRIM_HORIZON"},
                {"FunctionName": "f", "EventSourceArn": stream_arn("clicks"), "StartingPosition": "TRIM_HORIZON"}]
    async with broker.run(functions, mappings, dynamodb_poll_interval_seconds=0.1, kinesis_poll_interval_seconds=0.2,
                          kinesis_min_read_interval_seconds=0):
        await aws.call("dynamodb", "put_item", TableName="orders", Item={"id": {"S": "o1"}})
        await aws.call("kinesis", "put_record", StreamName="clicks", PartitionKey="k", Data=b'{"n": 1}')

        def sources() -> set[str]:
            return {r["eventSource"] for line in records.read_text().splitlines()
                    for r in json.loads(line)["event"].get("Records", [])}

        await wait_until(lambda: sources() == {"aws:dynamodb", "aws:kinesis"}, timeout=30)


async def test_managed_and_external_environments_serve_one_function(broker: BrokerRunner, external_env: Any,
                                                                     tmp_path: Path) -> None:
    """A function with both a Command and an ApiPort: managed environments start on demand, and an
    external one connected to the same port takes work too."""
    functions = {"f": {"Target": {"Runtime": {
        "ApiPort": 0, "Command": [sys.executable, "-m", "awslambdaric", "tests.handlers.behaviours.handler"],
        "WorkingDirectory": str(ROOT),
        "Environment": {"Variables": {"PYTHONPATH": str(ROOT), "MARK_DIR": str(tmp_path)}}}}, "Timeout": 5}}
    async with broker.run(functions, []) as app:
        status, _, body = await _invoke(app, {"id": "managed"})
        assert status == 200, body
        managed = body["pid"]
        external = external_env(app.runtimes["f"].port)
        # the external runtime client starts and asks for work: it and the managed one wait in next
        await wait_until(lambda: metric(app, "broker_environments", function="f", state="idle") >= 2)
        results = await asyncio.gather(*(_invoke(app, {"id": f"n{n}", "sleep": 0.5}) for n in range(6)))
        pids = {body["pid"] for status, _, body in results if status == 200}
        assert external.pid in pids, "the external environment took work"
        assert pids - {external.pid}, "so did managed ones"
        assert managed
