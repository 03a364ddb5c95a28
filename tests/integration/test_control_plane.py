"""Lambda's control plane as AWS tools meet it: function reads (GetFunction, GetFunctionConfiguration,
ListFunctions with paging, tags) and Lambda's JSON error on every route, so botocore names every error."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.conftest import BrokerRunner
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


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not reached"
        await asyncio.sleep(0.1)
