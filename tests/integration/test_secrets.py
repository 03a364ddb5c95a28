"""No secret leaves through errors or logs: the real broker process with a target URL that carries
credentials, a Redis URL with a password, API keys and AWS keys, driven through every error path
that prints them (unreachable target on sync, async and SQS paths, Redis taken away, bad signatures,
`broker validate` of a bad Redis URL); the log, every error body and /metrics are searched for the
secrets. Payloads are not logged either."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from broker.embedded import RedisServer, free_port
from tests.conftest import broker_settings
from tests.integration.helpers import wait_until
from tests.servers import Aws, BrokerProcess, MotoServer, queue_arn

TARGET_PASSWORD = "TargetPassw0rdXYZ"
REDIS_PASSWORD = "RedisPassw0rdQRS"
API_SECRET = "ApiSecretKey0123456789"
AWS_SECRET = "AwsSecretAccessKeyABCDEF"
PAYLOAD_MARK = "PayloadMarkerDoNotLog"
SECRETS = (TARGET_PASSWORD, REDIS_PASSWORD, API_SECRET, AWS_SECRET)


def _redis(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    from broker.embedded import redis_server_binary, wait_for_port  # noqa: PLC0415

    (tmp / "redis").mkdir(exist_ok=True)
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--requirepass", REDIS_PASSWORD, "--dir", str(tmp / "redis")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, "redis-server")
    return proc


async def test_no_secret_in_logs_error_bodies_or_metrics(moto_server: MotoServer, aws: Aws, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    redis_port = free_port()
    redis = _redis(tmp_path, redis_port)
    await aws.create_queue("jobs", VisibilityTimeout=5)
    await aws.send_batch((await aws.call("sqs", "get_queue_url", QueueName="jobs"))["QueueUrl"],
                         [json.dumps({"mark": PAYLOAD_MARK})] * 3)
    dead = free_port()  # nothing listens: every invoke fails with the URL in the error
    settings = broker_settings(RedisServer(tmp_path, port=redis_port), moto_server, tmp_path,
                               redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
                               async_retry_delays_seconds=[0.2], log_level="info")
    config = {
        "broker": {**settings, "api": {"credentials": [{"AccessKeyId": "ops", "SecretAccessKey": API_SECRET}]}},
        "functions": {"f": {"Target": {"Url": f"http://user:{TARGET_PASSWORD}@127.0.0.1:{dead}/invoke"},
                            "Timeout": 2}},
        "event_source_mappings": [{"FunctionName": "f", "EventSourceArn": queue_arn("jobs")}],
    }
    broker = BrokerProcess(config, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")  # the broker's AWS keys come from its environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    broker.start()
    bodies: list[str] = []
    try:
        await wait_until(lambda: asyncio.to_thread(lambda: broker.ready()[0] == 200), timeout=30)
        client = boto3.client("lambda", endpoint_url=broker.url, region_name="us-east-1", aws_access_key_id="ops",
                              aws_secret_access_key=API_SECRET, config=BotoConfig(retries={"max_attempts": 1}))
        sync = await asyncio.to_thread(_error_body, client, {"FunctionName": "f", "Payload": json.dumps(
            {"mark": PAYLOAD_MARK}).encode()})
        bodies.append(sync)
        assert "ServiceException" in sync or "could not be reached" in sync, sync
        await asyncio.to_thread(client.invoke, FunctionName="f", InvocationType="Event",
                                Payload=json.dumps({"mark": PAYLOAD_MARK}).encode())
        wrong = boto3.client("lambda", endpoint_url=broker.url, region_name="us-east-1", aws_access_key_id="ops",
                             aws_secret_access_key="not-" + API_SECRET, config=BotoConfig(retries={"max_attempts": 1}))
        bodies.append(await asyncio.to_thread(_error_body, wrong, {"FunctionName": "f"}))
        await asyncio.sleep(3)  # SQS batches and async retries fail against the dead target meanwhile
        redis.terminate()
        redis.wait()
        async with aiohttp.ClientSession() as http:
            await wait_until(lambda: asyncio.to_thread(lambda: broker.ready()[0] == 503), timeout=15)
            async with http.get(f"{broker.url}/readyz") as resp:
                bodies.append(await resp.text())
            async with http.get(f"{broker.url}/metrics") as resp:
                bodies.append(await resp.text())
        bodies.append(await asyncio.to_thread(_error_body, client, {"FunctionName": "f", "InvocationType": "Event",
                                                                    "Payload": b"{}"}))
        await asyncio.sleep(1)
    finally:
        broker.stop()
        if redis.poll() is None:
            redis.terminate()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"broker: {{redis_url: 'redis+sentinel://:{REDIS_PASSWORD}@127.0.0.1:1'}}\n")
    validate = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "broker", "validate", "-c", str(bad)], capture_output=True,
                              text=True, timeout=60, check=False)
    assert validate.returncode == 1
    log = broker.log_path.read_text()
    events = {line.get("event") for line in broker.log_lines()}
    assert {"batch_given_up", "async_retry_scheduled", "auth_failed"} & events, events  # the paths ran
    assert "127.0.0.1" in log  # the errors are there, only their secrets are masked
    for secret in SECRETS:
        assert secret not in log, f"{secret} in the log"
        for body in [*bodies, validate.stdout + validate.stderr]:
            assert secret not in body, f"{secret} in {body[:300]}"
    assert PAYLOAD_MARK not in log, "a payload was logged"


def _error_body(client: object, kwargs: dict[str, object]) -> str:
    try:
        result = client.invoke(**kwargs)  # type: ignore[attr-defined]
    except ClientError as exc:
        return json.dumps(exc.response.get("Error", {})) + json.dumps(exc.response.get("ResponseMetadata", {}))
    return result["Payload"].read().decode() if "Payload" in result else ""
