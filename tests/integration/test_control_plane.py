"""Lambda's control plane as AWS tools meet it: function reads (GetFunction, GetFunctionConfiguration,
ListFunctions with paging, tags) and Lambda's JSON error on every route, so botocore names every error."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import boto3
import pytest
import redis.asyncio as aioredis
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from broker.control.registry import MappingRegistry
from tests.conftest import BrokerRunner
from tests.integration.helpers import wait_until
from tests.servers import RecordingTarget


def _client(app: Any) -> Any:
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{app.api_port}", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x", config=BotoConfig(retries={"max_attempts": 1}))


async def test_functions_are_readable(broker: BrokerRunner, target: RecordingTarget) -> None:
    functions = {name: {"Target": {"Url": target.url}, "Timeout": 7, "MemorySize": 256,
                        "Environment": {"Variables": {"TABLE": "orders", "DB_PASSWORD": "hunter2"}}}
                 for name in ("alpha", "beta", "gamma")}
    functions["beta"]["ReservedConcurrentExecutions"] = 4
    async with broker.run(functions, []) as app:
        lam = _client(app)
        got = await asyncio.to_thread(lam.get_function, FunctionName="beta")
        config = got["Configuration"]
        assert config["FunctionName"] == "beta"
        assert config["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:beta"
        assert config["Timeout"] == 7
        assert config["MemorySize"] == 256
        assert config["State"] == "Active"
        assert config["Environment"]["Variables"] == {"TABLE": "orders", "DB_PASSWORD": "***"}
        assert got["Concurrency"] == {"ReservedConcurrentExecutions": 4}
        assert (await asyncio.to_thread(lam.get_function_configuration, FunctionName="alpha"))["Timeout"] == 7
        page = await asyncio.to_thread(lam.list_functions, MaxItems=2)
        assert [f["FunctionName"] for f in page["Functions"]] == ["alpha", "beta"]
        rest = await asyncio.to_thread(lam.list_functions, MaxItems=2, Marker=page["NextMarker"])
        assert [f["FunctionName"] for f in rest["Functions"]] == ["gamma"]
        assert "NextMarker" not in rest
        arn = config["FunctionArn"]
        await asyncio.to_thread(lam.tag_resource, Resource=arn, Tags={"team": "payments"})
        assert (await asyncio.to_thread(lam.list_tags, Resource=arn))["Tags"] == {"team": "payments"}
        await asyncio.to_thread(lam.untag_resource, Resource=arn, TagKeys=["team"])
        assert (await asyncio.to_thread(lam.list_tags, Resource=arn))["Tags"] == {}
        with pytest.raises(ClientError) as missing:
            await asyncio.to_thread(lam.get_function, FunctionName="nope")
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_every_answer_is_a_lambda_error(broker: BrokerRunner, target: RecordingTarget) -> None:
    """Over 200 malformed requests (unknown paths, wrong methods, oversized and bad bodies): each
    answer carries X-Amzn-ErrorType and Lambda's JSON shape."""
    async with broker.run({"f": {"Target": {"Url": target.url}}}, []) as app:
        base = f"http://127.0.0.1:{app.api_port}"
        unknown = ("/", "/nope", "/2015-03-31", "/2015-03-31/functions/f/nope", "/2099-01-01/functions/f",
                   "/2015-03-31/event-source-mappings/x/y", "/2017-03-31/tags", "/runtime/invocation/next")
        known = ("/2015-03-31/functions/f/invocations", "/2017-10-31/functions/f/concurrency",
                 "/2019-09-25/functions/f/event-invoke-config", "/2016-08-19/account-settings")
        with_bodies = (("PUT", "/2017-10-31/functions/f/concurrency"), ("PUT", "/2019-09-25/functions/f/event-invoke-config"),
                       ("POST", "/2019-09-25/functions/f/event-invoke-config"), ("POST", "/2015-03-31/functions/f/invocations"),
                       ("POST", "/2017-03-31/tags/arn:aws:lambda:us-east-1:000000000000:function:f"))
        invalid = (b"{", b"[1,", b'{"a": NaN}', b"\xff\xfe", b"1e999", b"{}}")
        non_objects = (b'"just a string"', b"null", b"[]")  # valid JSON, but not the object these APIs take
        requests: list[tuple[str, str, bytes]] = [
            *((method, path, b"") for path in unknown for method in ("GET", "POST", "PUT", "DELETE", "PATCH")),
            *((method, path, b"") for path in known for method in ("PATCH", "OPTIONS")),
            *((method, path, body) for body in invalid for method, path in with_bodies),
            *((method, path, body) for body in non_objects for method, path in with_bodies if "invocations" not in path),
            *(("POST", "/2015-03-31/functions/f/invocations", b"x" * (8 * 1024 * 1024 + n)) for n in range(12)),
            *(("GET", f"/random/{n}/path", b"") for n in range(100)),
        ]
        assert len(requests) >= 200
        async with aiohttp.ClientSession() as http:
            for method, path, body in requests:
                data = io.BytesIO(body) if len(body) > 1024 * 1024 else (body or None)
                async with http.request(method, base + path, data=data) as resp:
                    assert resp.status >= 400, (method, path, resp.status)
                    assert resp.headers.get("X-Amzn-ErrorType"), (method, path, resp.status, await resp.text())
                    doc = await resp.json(content_type=None)
                    assert {"Type", "message"} <= set(doc), (method, path, doc)


async def test_mapping_shapes_paging_filters_and_a_pause_that_survives_reloads(aws: Any, broker: BrokerRunner,
                                                                             target: RecordingTarget) -> None:
    from tests.servers import queue_arn, stream_arn  # noqa: PLC0415

    for name in ("q1", "q2", "q3"):
        await aws.create_queue(name)
    await aws.call("kinesis", "create_stream", StreamName="s", ShardCount=1)
    functions = {"f": {"Target": {"Url": target.url}}, "g": {"Target": {"Url": target.url}}}
    mappings = [{"FunctionName": "f", "EventSourceArn": queue_arn(q)} for q in ("q1", "q2", "q3")]
    mappings.append({"FunctionName": "g", "EventSourceArn": stream_arn("s"), "StartingPosition": "LATEST"})
    async with broker.run(functions, mappings) as app:
        lam = _client(app)
        stream = (await asyncio.to_thread(lam.list_event_source_mappings, FunctionName="g"))["EventSourceMappings"][0]
        assert stream["DestinationConfig"] == {"OnFailure": {}}
        assert stream["StateTransitionReason"] == "User action"
        first = await asyncio.to_thread(lam.list_event_source_mappings, FunctionName="f", MaxItems=2)
        assert len(first["EventSourceMappings"]) == 2
        rest = await asyncio.to_thread(lam.list_event_source_mappings, FunctionName="f", MaxItems=2,
                                       Marker=first["NextMarker"])
        assert len(rest["EventSourceMappings"]) == 1
        assert "NextMarker" not in rest
        for form in ("f:$LATEST", "arn:aws:lambda:us-east-1:000000000000:function:f"):
            listed = await asyncio.to_thread(lam.list_event_source_mappings, FunctionName=form)
            assert len(listed["EventSourceMappings"]) == 3, form
        with pytest.raises(ClientError) as unknown:
            await asyncio.to_thread(lam.list_event_source_mappings, FunctionName="nope")
        assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"

        uuid = first["EventSourceMappings"][0]["UUID"]
        await asyncio.to_thread(lam.update_event_source_mapping, UUID=uuid, Enabled=False)
        assert app.runners[uuid].state in ("Disabling", "Disabled")
        path = broker.write_config(functions, [*mappings, {"FunctionName": "g", "EventSourceArn": queue_arn("q3")}])
        assert path.exists()
        await _until(lambda: len(app.runners) == 5)
        assert not app.runners[uuid].esm.Enabled, "an edit of the file must not undo the API's pause"


async def _no_override(redis_server: Any, uuid: str) -> bool:
    """No pause or resume made through the API is kept for the mapping any more."""
    client = aioredis.from_url(redis_server.url)
    try:
        return uuid not in await MappingRegistry(client).enabled_overrides()
    finally:
        await client.aclose()


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not reached"
        await asyncio.sleep(0.1)


async def test_create_update_delete_mappings_through_the_api(aws: Any, broker: BrokerRunner, redis_server: Any,
                                                             moto_server: Any, target: RecordingTarget,
                                                             tmp_path: Any) -> None:
    """SQS and Kinesis mappings created, updated and deleted with boto3; records flow; a second
    replica runs them too; both restart and the API mappings come back; AWS's errors."""
    import json  # noqa: PLC0415

    from tests.servers import queue_arn, stream_arn  # noqa: PLC0415

    url = await aws.create_queue("api-q")
    await aws.call("kinesis", "create_stream", StreamName="api-s", ShardCount=1)
    functions = {"f": {"Target": {"Url": target.url}}, "g": {"Target": {"Url": target.url}}}
    async with broker.run(functions, [], kinesis_poll_interval_seconds=0.2, kinesis_min_read_interval_seconds=0) as app:
        lam = _client(app)
        sqs = await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f",
                                      EventSourceArn=queue_arn("api-q"), BatchSize=5)
        assert sqs["State"] == "Creating"
        assert sqs["BatchSize"] == 5
        kin = await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f",
                                      EventSourceArn=stream_arn("api-s"), StartingPosition="TRIM_HORIZON")
        assert kin["DestinationConfig"] == {"OnFailure": {}}
        await aws.send(url, "hello")
        await aws.call("kinesis", "put_record", StreamName="api-s", PartitionKey="k", Data=b'{"n": 1}')
        await target.wait_for(lambda calls: {r.get("eventSource") for c in calls for r in c.event["Records"]}
                              >= {"aws:sqs", "aws:kinesis"}, timeout=30)

        for call, kwargs, code in [
            (lam.create_event_source_mapping, {"FunctionName": "f", "EventSourceArn": queue_arn("api-q")},
             "ResourceConflictException"),
            (lam.create_event_source_mapping, {"FunctionName": "nope", "EventSourceArn": queue_arn("api-q")},
             "InvalidParameterValueException"),
            (lam.create_event_source_mapping, {"FunctionName": "f", "EventSourceArn": queue_arn("missing")},
             "InvalidParameterValueException"),
            (lam.create_event_source_mapping, {"FunctionName": "g", "EventSourceArn": queue_arn("api-q"),
                                               "BatchSize": 50}, "InvalidParameterValueException"),
            (lam.create_event_source_mapping, {"FunctionName": "g", "EventSourceArn": stream_arn("api-s")},
             "InvalidParameterValueException"),
            (lam.update_event_source_mapping, {"UUID": "00000000-0000-0000-0000-000000000000", "BatchSize": 2},
             "ResourceNotFoundException"),
            (lam.delete_event_source_mapping, {"UUID": "00000000-0000-0000-0000-000000000000"},
             "ResourceNotFoundException"),
        ]:
            with pytest.raises(ClientError) as refused:
                await asyncio.to_thread(call, **kwargs)
            assert refused.value.response["Error"]["Code"] == code, (kwargs, refused.value.response["Error"])
        with pytest.raises(ClientError) as duplicate:
            await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f", EventSourceArn=queue_arn("api-q"))
        assert sqs["UUID"] in duplicate.value.response["Error"]["Message"]

        updated = await asyncio.to_thread(lam.update_event_source_mapping, UUID=sqs["UUID"], BatchSize=7,
                                          MaximumBatchingWindowInSeconds=1, FunctionName="g",
                                          FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": ["x"]})}]})
        assert updated["State"] == "Updating"
        assert updated["BatchSize"] == 7
        assert updated["FunctionArn"].endswith(":function:g")
        await _until(lambda: app.runners.get(sqs["UUID"]) is not None and app.runners[sqs["UUID"]].esm.BatchSize == 7)
        await asyncio.to_thread(lam.update_event_source_mapping, UUID=kin["UUID"], Enabled=False)
        await _until(lambda: app.runners[kin["UUID"]].state == "Disabled")

        second = BrokerRunner(redis_server, moto_server, tmp_path / "second")
        (tmp_path / "second").mkdir()
        async with second.run(functions, [], replica_id="second") as other:
            await _until(lambda: set(other.runners) == {sqs["UUID"], kin["UUID"]})
            listed = await asyncio.to_thread(_client(other).list_event_source_mappings)
            assert {m["UUID"] for m in listed["EventSourceMappings"]} == {sqs["UUID"], kin["UUID"]}
    async with broker.run(functions, []) as app:  # every replica restarted: the API mappings come back
        await _until(lambda: set(app.runners) == {sqs["UUID"], kin["UUID"]})
        lam = _client(app)
        assert (await asyncio.to_thread(lam.get_event_source_mapping, UUID=sqs["UUID"]))["BatchSize"] == 7
        deleted = await asyncio.to_thread(lam.delete_event_source_mapping, UUID=kin["UUID"])
        assert deleted["State"] == "Deleting"
        await _until(lambda: kin["UUID"] not in app.runners)
        with pytest.raises(ClientError) as gone:
            await asyncio.to_thread(lam.get_event_source_mapping, UUID=kin["UUID"])
        assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_the_aws_cli_manages_mappings(aws: Any, broker: BrokerRunner, target: RecordingTarget) -> None:
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.servers import queue_arn  # noqa: PLC0415

    await aws.create_queue("cli-q")
    async with broker.run({"f": {"Target": {"Url": target.url}}}, []) as app:
        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
            return subprocess.run([sys.executable, "-m", "awscli", "lambda", *args, "--endpoint-url",
                                   f"http://127.0.0.1:{app.api_port}"], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)

        created = await asyncio.to_thread(cli, "create-event-source-mapping", "--function-name", "f",
                                          "--event-source-arn", queue_arn("cli-q"), "--batch-size", "3")
        assert created.returncode == 0, created.stderr
        uuid = json.loads(created.stdout)["UUID"]
        bad = await asyncio.to_thread(cli, "create-event-source-mapping", "--function-name", "f",
                                      "--event-source-arn", queue_arn("cli-q"), "--batch-size", "20000")
        assert bad.returncode != 0
        assert "ValidationException" in bad.stderr or "InvalidParameterValueException" in bad.stderr, bad.stderr
        listed = await asyncio.to_thread(cli, "list-event-source-mappings", "--function-name", "f")
        assert [m["UUID"] for m in json.loads(listed.stdout)["EventSourceMappings"]] == [uuid]
        deleted = await asyncio.to_thread(cli, "delete-event-source-mapping", "--uuid", uuid)
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(deleted.stdout)["State"] == "Deleting"
        again = await asyncio.to_thread(cli, "delete-event-source-mapping", "--uuid", uuid)
        assert "ResourceNotFoundException" in again.stderr


async def test_a_pause_of_a_file_mapping_outlives_restarts_and_reaches_other_replicas(
        aws: Any, broker: BrokerRunner, redis_server: Any, moto_server: Any, target: RecordingTarget,
        tmp_path: Any) -> None:
    from tests.servers import queue_arn  # noqa: PLC0415

    await aws.create_queue("paused-q")
    functions = {"f": {"Target": {"Url": target.url}}}
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("paused-q")}
    async with broker.run(functions, [mapping]) as app:
        uuid = next(iter(app.runners))
        await asyncio.to_thread(_client(app).update_event_source_mapping, UUID=uuid, Enabled=False)
        (tmp_path / "other").mkdir()
        async with BrokerRunner(redis_server, moto_server, tmp_path / "other").run(functions, [mapping],
                                                                                   replica_id="other") as other:
            await _until(lambda: other.runners[uuid].state == "Disabled")
    async with broker.run(functions, [mapping]) as app:  # restarted: still paused
        await _until(lambda: app.runners[uuid].state == "Disabled")
    async with broker.run(functions, [{**mapping, "Enabled": False}]):  # the file changes Enabled: the override lapses
        await wait_until(lambda: _no_override(redis_server, uuid), timeout=10)
    async with broker.run(functions, [mapping]) as app:  # the file changed Enabled since: the file decides
        await _until(lambda: app.runners[uuid].state == "Enabled")


async def test_validation_errors_through_the_api_speak_aws(aws: Any, broker: BrokerRunner,
                                                          target: RecordingTarget) -> None:
    """docs/aws-semantics.md, "Recorded refusals"'s cases through CreateEventSourceMapping, each with AWS's exception type and wording;
    and a DynamoDB Streams mapping created through the API that delivers."""
    from tests.integration.test_dynamodb_streams import create_table  # noqa: PLC0415
    from tests.servers import queue_arn, stream_arn  # noqa: PLC0415

    await aws.create_queue("v-q")
    await aws.call("kinesis", "create_stream", StreamName="v-s", ShardCount=1)
    table = await create_table(aws, "v-t")
    async with broker.run({"f": {"Target": {"Url": target.url}}}, [], dynamodb_poll_interval_seconds=0.1) as app:
        lam = _client(app)
        cases = [
            ({"EventSourceArn": queue_arn("v-q"), "BatchSize": 50}, "InvalidParameterValueException",
             "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"),
            ({"EventSourceArn": queue_arn("v-q"), "FilterCriteria": {"Filters": [{"Pattern": "{oops"}]}},
             "InvalidParameterValueException", "Invalid filter pattern definition."),
            ({"EventSourceArn": stream_arn("v-s")}, "InvalidParameterValueException",
             "1 validation error detected: Value null at 'startingPosition' failed to satisfy constraint: "
             "Member must not be null."),
            ({"EventSourceArn": stream_arn("v-s"), "StartingPosition": "invalid"}, "ValidationException",
             "1 validation error detected: Value 'invalid' at 'startingPosition' failed to satisfy constraint: "
             "Member must satisfy enum value set: [LATEST, AT_TIMESTAMP, TRIM_HORIZON]"),
            ({"EventSourceArn": table, "StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": 1},
             "InvalidParameterValueException", f"Unsupported starting position for arn type: {table}"),
            ({"EventSourceArn": stream_arn("v-s"), "StartingPosition": "LATEST",
              "DestinationConfig": {"OnSuccess": {"Destination": queue_arn("v-q")}}},
             "InvalidParameterValueException", "Unsupported DestinationConfig parameter for given event source "
                                               "mapping type."),
            ({"EventSourceArn": stream_arn("missing"), "StartingPosition": "LATEST"},
             "InvalidParameterValueException", f"Stream not found: {stream_arn('missing')}"),
            ({"EventSourceArn": queue_arn("missing")}, "InvalidParameterValueException",
             "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. SQS "
             "Error Message: The specified queue does not exist."),
        ]
        for fields, code, message in cases:
            with pytest.raises(ClientError) as refused:
                await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f", **fields)
            error = refused.value.response["Error"]
            assert (error["Code"], error["Message"]) == (code, message), fields
        created = await asyncio.to_thread(lam.create_event_source_mapping, FunctionName="f", EventSourceArn=table,
                                          StartingPosition="TRIM_HORIZON")
        assert created["StateTransitionReason"] == "User action"
        await aws.call("dynamodb", "put_item", TableName="v-t", Item={"id": {"S": "x"}})
        await target.wait_for(lambda calls: any(r.get("eventSource") == "aws:dynamodb"
                                                for c in calls for r in c.event["Records"]), timeout=30)


async def test_the_account_id_is_asked_from_sts_when_left_empty(redis_server: Any, tmp_path: Any,
                                                                target: RecordingTarget) -> None:
    """account_id left out: the broker asks STS GetCallerIdentity once at start and every ARN it
    builds names that account; an explicit account_id wins."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from broker.embedded import wait_for_port  # noqa: PLC0415
    from tests.conftest import broker_settings  # noqa: PLC0415
    from tests.servers import MotoServer  # noqa: PLC0415

    other = MotoServer()  # an emulator whose credentials belong to another account
    other._proc = subprocess.Popen([sys.executable, "-m", "broker.emulator", "-H", "127.0.0.1", "-p", str(other.port)],
                                   env={**os.environ, "MOTO_ACCOUNT_ID": "111122223333"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_for_port, other.port, other._proc, "emulator", 60)
        for given, expected in ((None, "111122223333"), ("444455556666", "444455556666")):
            runner = BrokerRunner(redis_server, other, tmp_path)
            settings = {} if given is None else {"account_id": given}
            async with runner.run({"f": {"Target": {"Url": target.url}}}, [], **settings) as app:
                got = await asyncio.to_thread(_client(app).get_function, FunctionName="f")
            assert got["Configuration"]["FunctionArn"] == f"arn:aws:lambda:us-east-1:{expected}:function:f"
        assert "account_id" not in broker_settings(redis_server, other, tmp_path)
    finally:
        other.stop()


async def test_while_sts_cannot_be_reached_the_port_says_so(redis_server: Any, tmp_path: Any,
                                                            target: RecordingTarget) -> None:
    """account_id empty and AWS unreachable at start: the broker waits for STS (logged) while its
    port answers /healthz 200 and /readyz 503 naming what it waits for; SIGTERM still stops it."""
    import json  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from broker.embedded import free_port  # noqa: PLC0415
    from tests.conftest import broker_settings  # noqa: PLC0415
    from tests.servers import BrokerProcess, MotoServer  # noqa: PLC0415

    nowhere = MotoServer()  # never started: nothing listens on its port
    config = {"broker": broker_settings(redis_server, nowhere, tmp_path, aws_endpoint_url=f"http://127.0.0.1:{free_port()}"),
              "functions": {"f": {"Target": {"Url": target.url}}}, "event_source_mappings": []}
    broker = BrokerProcess(config, tmp_path)
    await asyncio.to_thread(broker.start)
    try:
        def get(path: str) -> tuple[int, Any]:
            try:
                with urllib.request.urlopen(f"{broker.url}{path}", timeout=5) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
        status, body = await asyncio.to_thread(get, "/readyz")
        assert status == 503
        assert "STS GetCallerIdentity" in body["problems"][0]
        status, body = await asyncio.to_thread(get, "/2015-03-31/functions")
        assert status == 503
        deadline = asyncio.get_running_loop().time() + 60
        while not any(d.get("event") == "startup_waiting" for d in broker.log_lines()):
            assert asyncio.get_running_loop().time() < deadline, "the wait for STS is not logged"
            await asyncio.sleep(0.5)
    finally:
        code = await asyncio.to_thread(broker.stop)
    assert code is not None
