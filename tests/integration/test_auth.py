"""The API authenticated with SigV4 and least privilege, through boto3 and the AWS CLI: every API
works signed; unsigned, wrong-secret, unknown-key and skewed-clock requests get AWS's 403s; a key
limited to ``lambda:InvokeFunction`` on ``orders*`` invokes orders only, and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from broker.clock import SystemClock
from tests.conftest import BrokerRunner
from tests.servers import Aws, RecordingTarget, queue_arn

OPS_SECRET = "ops-secret-0123456789abcdefghij"
PRODUCER_SECRET = "producer-secret-9876543210zyxw"


def _functions(target: RecordingTarget) -> dict[str, Any]:
    return {"orders": {"Target": {"Url": target.url}, "Timeout": 2},
            "billing": {"Target": {"Url": target.url}, "Timeout": 2}}


def _api(tmp_path: Path) -> dict[str, Any]:
    secret_file = tmp_path / "producer.key"
    secret_file.write_text(PRODUCER_SECRET + "\n")
    return {"host": "127.0.0.1", "port": 0, "credentials": [
        {"AccessKeyId": "ops", "SecretAccessKey": OPS_SECRET},
        {"AccessKeyId": "producer", "SecretAccessKeyFile": str(secret_file), "Actions": ["lambda:InvokeFunction"],
         "Resources": ["arn:aws:lambda:*:*:function:orders*"]},
    ]}


def _client(port: int, key: str, secret: str) -> Any:
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=BotoConfig(retries={"max_attempts": 1}))


async def _code(call: Any, **kwargs: Any) -> str:
    try:
        await asyncio.to_thread(call, **kwargs)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


async def test_signed_calls_work_and_bad_ones_get_aws_403s(aws: Aws, broker: BrokerRunner, target: RecordingTarget,
                                                           tmp_path: Path) -> None:
    await aws.create_queue("jobs")
    mapping = {"FunctionName": "orders", "EventSourceArn": queue_arn("jobs")}
    async with broker.run(_functions(target), [mapping], api=_api(tmp_path)) as app:
        port = app.api_port
        assert port is not None
        ops = _client(port, "ops", OPS_SECRET)
        assert (await asyncio.to_thread(ops.invoke, FunctionName="orders", Payload=b"{}"))["StatusCode"] == 200
        uuid = (await asyncio.to_thread(ops.list_event_source_mappings))["EventSourceMappings"][0]["UUID"]
        for call, kwargs in [
            (ops.get_event_source_mapping, {"UUID": uuid}),
            (ops.put_function_concurrency, {"FunctionName": "orders", "ReservedConcurrentExecutions": 5}),
            (ops.get_function_concurrency, {"FunctionName": "orders"}),
            (ops.delete_function_concurrency, {"FunctionName": "orders"}),
            (ops.put_function_event_invoke_config, {"FunctionName": "orders", "MaximumRetryAttempts": 1}),
            (ops.get_function_event_invoke_config, {"FunctionName": "orders"}),
            (ops.get_account_settings, {}),
            (ops.invoke, {"FunctionName": "orders", "InvocationType": "Event", "Payload": b'{"a": 1}'}),
        ]:
            assert await _code(call, **kwargs) == "ok", call

        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/2015-03-31/functions/orders/invocations", data=b"{}") as r:
                assert r.status == 403
                assert r.headers["X-Amzn-ErrorType"] == "MissingAuthenticationTokenException"
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                    assert r.status == 200, path
        assert await _code(_client(port, "ops", "wrong").invoke, FunctionName="orders") == "InvalidSignatureException"
        assert await _code(_client(port, "nobody", "x").invoke, FunctionName="orders") == "UnrecognizedClientException"
        assert await _code(_client(port, "nobody", "x").invoke, FunctionName="missing") == "UnrecognizedClientException"

        producer = _client(port, "producer", PRODUCER_SECRET)
        assert await _code(producer.invoke, FunctionName="orders", Payload=b"{}") == "ok"
        for call, kwargs in [
            (producer.invoke, {"FunctionName": "billing", "Payload": b"{}"}),
            (producer.invoke, {"FunctionName": "does-not-exist", "Payload": b"{}"}),  # 403, not 404: no probing
            (producer.put_function_concurrency, {"FunctionName": "orders", "ReservedConcurrentExecutions": 0}),
            (producer.put_function_event_invoke_config, {"FunctionName": "orders", "MaximumRetryAttempts": 0}),
            (producer.update_event_source_mapping, {"UUID": uuid, "Enabled": False}),
            (producer.list_event_source_mappings, {}),
        ]:
            assert await _code(call, **kwargs) == "AccessDeniedException", (call, kwargs)
        with pytest.raises(ClientError) as denied:
            await asyncio.to_thread(producer.invoke, FunctionName="billing", Payload=b"{}")
        assert denied.value.response["Error"]["Message"] == ("User: arn:aws:iam::000000000000:user/producer is not authorized to perform: "
                           "lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:000000000000:function:billing "
                           "because no identity-based policy allows the lambda:InvokeFunction action")
        assert app.runners[uuid].esm.Enabled
        failures = {s.labels["reason"]: s.value for m in app.metrics.registry.collect()
                    if m.name == "broker_auth_failures" for s in m.samples if s.name.endswith("_total")}
        assert failures == {"missing": 1, "bad_signature": 1, "unknown_key": 2, "denied": 7}
    assert target.calls  # the signed invokes ran


class _SkewedClock(SystemClock):
    def time(self) -> float:
        return super().time() + 600  # the broker's clock is 10 minutes ahead of the client's


async def test_a_request_signed_ten_minutes_off_is_refused(broker: BrokerRunner, target: RecordingTarget,
                                                           tmp_path: Path) -> None:
    async with broker.run(_functions(target), [], clock=_SkewedClock(), api=_api(tmp_path)) as app:
        client = _client(app.api_port or 0, "ops", OPS_SECRET)
        with pytest.raises(ClientError) as info:
            await asyncio.to_thread(client.invoke, FunctionName="orders", Payload=b"{}")
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert info.value.response["Error"]["Message"].startswith("Signature expired: ")


async def test_the_aws_cli_signs_and_is_checked(broker: BrokerRunner, target: RecordingTarget, tmp_path: Path) -> None:
    async with broker.run(_functions(target), [], api=_api(tmp_path)) as app:
        def cli(key: str, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
            return subprocess.run([sys.executable, "-m", "awscli", "lambda", *args, "--endpoint-url",
                                   f"http://127.0.0.1:{app.api_port}"], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)

        out = tmp_path / "out.json"
        ok = await asyncio.to_thread(cli, "producer", PRODUCER_SECRET, "invoke", "--function-name", "orders",
                                     "--payload", "{}", str(out))
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["StatusCode"] == 200
        denied = await asyncio.to_thread(cli, "producer", PRODUCER_SECRET, "get-account-settings")
        assert denied.returncode != 0
        assert "AccessDeniedException" in denied.stderr
        settings = await asyncio.to_thread(cli, "ops", OPS_SECRET, "get-account-settings")
        assert settings.returncode == 0, settings.stderr
        assert json.loads(settings.stdout)["AccountLimit"]["ConcurrentExecutions"] == 1000


async def test_keys_rotate_on_a_running_broker(broker: BrokerRunner, target: RecordingTarget, tmp_path: Path) -> None:
    """A key added to api.credentials works within a reload, a removed one is refused, and a secret
    file's new content (a Kubernetes Secret update) replaces the old secret; no restart, one log line each."""
    from structlog.testing import capture_logs  # noqa: PLC0415

    functions = _functions(target)
    api = _api(tmp_path)
    with capture_logs() as logs:
        async with broker.run(functions, [], api=api) as app:
            port = app.api_port or 0
            started = app.started
            assert await _code(_client(port, "new", "new-secret-abcdefghijklmnopqrstu").list_functions) \
                == "UnrecognizedClientException"
            rotated = {**api, "credentials": [*api["credentials"], {"AccessKeyId": "new",
                                                                    "SecretAccessKey": "new-secret-abcdefghijklmnopqrstu"}]}
            rotated["credentials"] = [c for c in rotated["credentials"] if c["AccessKeyId"] != "ops"]
            broker.write_config(functions, [], api=rotated)

            async def until(key: str, secret: str, code: str) -> None:
                deadline = asyncio.get_running_loop().time() + 15
                while await _code(_client(port, key, secret).invoke, FunctionName="orders", Payload=b"{}") != code:
                    assert asyncio.get_running_loop().time() < deadline, (key, code)
                    await asyncio.sleep(0.2)

            await until("new", "new-secret-abcdefghijklmnopqrstu", "ok")
            await until("ops", OPS_SECRET, "UnrecognizedClientException")
            producer = _client(port, "producer", PRODUCER_SECRET)
            assert await _code(producer.invoke, FunctionName="orders", Payload=b"{}") == "ok"
            (tmp_path / "producer.key").write_text("producer-secret-rotated-000000000\n")  # the Secret changed
            await until("producer", "producer-secret-rotated-000000000", "ok")
            assert await _code(producer.invoke, FunctionName="orders", Payload=b"{}") == "InvalidSignatureException"
            assert await _code(producer.list_functions) == "InvalidSignatureException"
            assert app.started is started
    rotations = [e for e in logs if e["event"] == "api_keys_rotated"]
    assert rotations[0]["added"] == ["new"]
    assert rotations[0]["removed"] == ["ops"]
    assert rotations[-1]["changed"] == ["producer"]
    assert not [e for e in logs if e["event"] == "config_reload_restart_required"]


async def test_every_route_declares_its_iam_action(broker: BrokerRunner, target: RecordingTarget,
                                                    tmp_path: Path) -> None:
    """Each route of the API says which IAM action it needs (or that it is open) where it is
    registered; a route that said nothing would be refused by the middleware, and fails here first."""
    from broker.api.routes import action_of, is_open  # noqa: PLC0415

    async with broker.run(_functions(target), [], api=_api(tmp_path)) as app:
        assert app.http_app is not None
        routes = [r for r in app.http_app.router.routes() if r.method != "HEAD"]
    undeclared = [(r.method, r.resource.canonical) for r in routes
                  if r.resource is not None and action_of(r.handler) is None and not is_open(r.handler)]
    assert len(routes) >= 25
    assert undeclared == []
    open_paths = sorted(r.resource.canonical for r in routes if r.resource is not None and is_open(r.handler))
    # The console's page and its sign-in are open: they hold no data, and what the page shows it asks
    # of the API's own routes with the session the sign-in gave.
    assert open_paths == ["/console", "/console/", "/console/assets/{name}", "/console/login", "/console/logout",
                          "/console/session", "/healthz", "/metrics", "/readyz"]
