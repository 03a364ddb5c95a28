"""What the event source mapping API answers while replicas restart, reloads swap mappings and Redis
is away: every known mapping, at any moment, from any replica; Lambda's transitional states."""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from broker.embedded import RedisServer
from tests.conftest import BrokerRunner, broker_settings
from tests.integration.helpers import wait_until
from tests.servers import Aws, BrokerProcess, MotoServer, RecordingTarget, queue_arn


def _client(port: int) -> Any:
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))


def _get_status(port: int, mapping: str) -> int:
    """GetEventSourceMapping's HTTP status (0 while nothing listens)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/2015-03-31/event-source-mappings/{mapping}",
                                    timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


async def _until_state(lam: Any, mapping: str, state: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await asyncio.to_thread(lam.get_event_source_mapping, UUID=mapping))["State"] != state:
        assert asyncio.get_running_loop().time() < deadline, f"{mapping} never {state}"
        await asyncio.sleep(0.1)


async def test_a_restarted_replica_knows_every_api_mapping(moto_server: MotoServer, aws: Aws, redis_server: RedisServer,
                                                           target: RecordingTarget, tmp_path: Path) -> None:
    """Create a mapping through the API, SIGKILL the only replica, start it again: from the first
    answer on, GetEventSourceMapping finds the mapping, and /readyz turns 200 only once it runs."""
    client = __import__("redis").Redis.from_url(redis_server.url)
    client.flushall()
    await aws.create_queue("kept")
    config = {"broker": broker_settings(redis_server, moto_server, tmp_path),
              "functions": {"f": {"Target": {"Url": target.url}}}, "event_source_mappings": []}
    first = BrokerProcess(config, tmp_path, name="first")
    await asyncio.to_thread(first.start)
    await wait_until(lambda: first.ready()[0] == 200, timeout=30)
    created = await asyncio.to_thread(_client(first.port).create_event_source_mapping, FunctionName="f",
                                      EventSourceArn=queue_arn("kept"))
    first.signal(signal.SIGKILL)
    first.stop()
    answers: list[int] = []
    second = BrokerProcess({**config, "broker": dict(config["broker"])}, tmp_path, name="second")
    second.start(wait=False)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            status = await asyncio.to_thread(_get_status, second.port, created["UUID"])
            if status:
                answers.append(status)
            if status and second.ready()[0] == 200:
                break
        final = await asyncio.to_thread(_get_status, second.port, created["UUID"])
    finally:
        second.stop()
        client.close()
    assert answers, "the restarted replica never answered"
    assert 404 not in answers, answers
    assert final == 200, "ready, and the mapping is there"


async def test_the_api_says_503_while_redis_cannot_be_read(moto_server: MotoServer, aws: Aws, target: RecordingTarget,
                                                          tmp_path: Path) -> None:
    private = RedisServer(tmp_path / "redis")
    private.start()
    await aws.create_queue("q")
    runner = BrokerRunner(private, moto_server, tmp_path)
    try:
        async with runner.run({"f": {"Target": {"Url": target.url}}}, []) as app:
            lam = _client(app.api_port or 0)
            made = await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f",
                                           EventSourceArn=queue_arn("q"))
            private.stop()
            for call, kwargs in ((lam.get_event_source_mapping, {"UUID": made["UUID"]}),
                                 (lam.list_event_source_mappings, {}),
                                 (lam.update_event_source_mapping, {"UUID": made["UUID"], "BatchSize": 3})):
                with pytest.raises(ClientError) as refused:
                    await asyncio.to_thread(call, **kwargs)
                error = refused.value.response
                assert error["ResponseMetadata"]["HTTPStatusCode"] == 503, error
                assert error["Error"]["Code"] == "ServiceException", error
            private.start()
            deadline = asyncio.get_running_loop().time() + 30
            while await asyncio.to_thread(_get_status, app.api_port or 0, made["UUID"]) != 200:
                assert asyncio.get_running_loop().time() < deadline, "the API did not recover with Redis"
                await asyncio.sleep(0.2)
    finally:
        private.stop()


async def test_updates_answer_lambdas_transitional_states(aws: Aws, broker: BrokerRunner,
                                                          target: RecordingTarget) -> None:
    await aws.create_queue("file-q")
    await aws.create_queue("api-q")
    file_uuid = str(uuid.uuid4())
    mapping = {"UUID": file_uuid, "FunctionName": "f", "EventSourceArn": queue_arn("file-q")}
    async with broker.run({"f": {"Target": {"Url": target.url}}}, [mapping]) as app:
        lam = _client(app.api_port or 0)
        made = await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f",
                                       EventSourceArn=queue_arn("api-q"))
        for target_uuid in (file_uuid, made["UUID"]):
            off = await asyncio.to_thread(lam.update_event_source_mapping, UUID=target_uuid, Enabled=False)
            assert off["State"] == "Disabling", target_uuid
            await _until_state(lam, target_uuid, "Disabled")
            on = await asyncio.to_thread(lam.update_event_source_mapping, UUID=target_uuid, Enabled=True)
            assert on["State"] == "Enabling", target_uuid
            await _until_state(lam, target_uuid, "Enabled")
        resized = await asyncio.to_thread(lam.update_event_source_mapping, UUID=made["UUID"], BatchSize=3)
        assert resized["State"] == "Updating"
        assert resized["BatchSize"] == 3


async def test_a_reload_that_retargets_a_mapping_leaves_no_gap(aws: Aws, broker: BrokerRunner,
                                                               target: RecordingTarget) -> None:
    await aws.create_queue("moving")
    mapping_uuid = str(uuid.uuid4())
    functions = {"f": {"Target": {"Url": target.url}}, "g": {"Target": {"Url": target.url}}}
    mapping = {"UUID": mapping_uuid, "FunctionName": "f", "EventSourceArn": queue_arn("moving")}
    async with broker.run(functions, [mapping], sqs_wait_time_seconds=2, drain_timeout_seconds=3) as app:
        port = app.api_port or 0
        statuses: list[int] = []
        arns: list[str] = []

        async def watch() -> None:
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/2015-03-31/event-source-mappings/{mapping_uuid}") as r:
                        statuses.append(r.status)
                        if r.status == 200:
                            arns.append((await r.json())["FunctionArn"])
                    await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.sleep(0.3)
            broker.write_config(functions, [{**mapping, "FunctionName": "g"}], sqs_wait_time_seconds=2,
                                drain_timeout_seconds=3)
            await wait_until(lambda: app.runners.get(mapping_uuid) is not None
                             and app.runners[mapping_uuid].esm.FunctionName == "g", timeout=20)
            await asyncio.sleep(0.3)
        finally:
            watcher.cancel()
    assert set(statuses) == {200}, sorted(set(statuses))
    assert arns[0].endswith(":function:f")
    assert arns[-1].endswith(":function:g")


async def test_unserved_function_operations_say_where_functions_come_from(broker: BrokerRunner,
                                                                          target: RecordingTarget) -> None:
    async with broker.run({"echo": {"Target": {"Url": target.url}}}, []) as app:
        lam = _client(app.api_port or 0)
        for call, kwargs in ((lam.update_function_configuration, {"FunctionName": "echo", "Timeout": 5}),
                             (lam.list_versions_by_function, {"FunctionName": "echo"}),
                             (lam.delete_function, {"FunctionName": "echo"})):
            with pytest.raises(ClientError) as refused:
                await asyncio.to_thread(call, **kwargs)
            message = refused.value.response["Error"]["Message"]
            assert "declared in the config file" in message, message
