"""Lambda's EventInvokeConfig API (docs/aws-semantics.md, "EventInvokeConfig") through boto3's Lambda client: put/update/get/delete/list
shapes and errors, the config file's setting shown until the API changes it, and a change applied by
the worker (and seen by a second replica) without a restart."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import BrokerRunner
from tests.integration.test_async_invoke import FAST, failing, fn, invoke, lambda_client
from tests.servers import ACCOUNT, REGION, Aws, RecordingTarget, queue_arn

ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f:$LATEST"


async def call(client: Any, method: str, **kwargs: Any) -> Any:
    response = await asyncio.to_thread(getattr(client, method), FunctionName="f", **kwargs)
    response.pop("ResponseMetadata")
    return response


async def test_put_get_update_list_delete(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    async with broker.run(fn(target), [], **FAST) as app:
        client = lambda_client(app)
        with pytest.raises(client.exceptions.ResourceNotFoundException) as missing:
            await call(client, "get_function_event_invoke_config")
        assert missing.value.response["Error"]["Message"] == f"The function {ARN} doesn't have an EventInvokeConfig"
        assert await call(client, "list_function_event_invoke_configs") == {"FunctionEventInvokeConfigs": []}

        put = await call(client, "put_function_event_invoke_config", MaximumRetryAttempts=0,
                         DestinationConfig={"OnFailure": {"Destination": queue_arn("failed")}})
        last_modified = put.pop("LastModified")
        assert put == {"FunctionArn": ARN, "MaximumRetryAttempts": 0,
                       "DestinationConfig": {"OnSuccess": {}, "OnFailure": {"Destination": queue_arn("failed")}}}
        got = await call(client, "get_function_event_invoke_config")
        assert got.pop("LastModified") == last_modified
        assert got == put

        updated = await call(client, "update_function_event_invoke_config", MaximumEventAgeInSeconds=300)
        updated.pop("LastModified")
        assert updated == {**put, "MaximumEventAgeInSeconds": 300}  # the rest kept

        replaced = await call(client, "put_function_event_invoke_config", MaximumEventAgeInSeconds=120)
        replaced.pop("LastModified")
        assert replaced == {"FunctionArn": ARN, "MaximumEventAgeInSeconds": 120,
                            "DestinationConfig": {"OnSuccess": {}, "OnFailure": {}}}  # omitted settings removed
        listed = await call(client, "list_function_event_invoke_configs")
        assert [c["MaximumEventAgeInSeconds"] for c in listed["FunctionEventInvokeConfigs"]] == [120]

        await call(client, "delete_function_event_invoke_config")
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await call(client, "get_function_event_invoke_config")
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await call(client, "delete_function_event_invoke_config")
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await call(client, "update_function_event_invoke_config", MaximumRetryAttempts=1)


async def test_bad_requests_are_refused(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    async with broker.run(fn(target), [], **FAST) as app:
        client = lambda_client(app, parameter_validation=False)  # boto3 would refuse some of these itself
        refusals = [
            ({}, "InvalidParameterValueException",
             "You must specify at least one of error handling or destination setting."),
            ({"MaximumRetryAttempts": 3}, "ValidationException",
             "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: "
             "Member must have value less than or equal to 2"),
            ({"MaximumEventAgeInSeconds": 59}, "ValidationException",
             "1 validation error detected: Value '59' at 'maximumEventAgeInSeconds' failed to satisfy constraint: "
             "Member must have value greater than or equal to 60"),
            ({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:s3:::bucket"}}},
             "InvalidParameterValueException",
             "The provided destination config DestinationConfig(onSuccess=OnSuccess(destination=arn:aws:s3:::bucket), "
             "onFailure=null) is invalid."),
            ({"DestinationConfig": {"OnFailure": {"Destination": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f"}}},
             "InvalidParameterValueException", "You can't specify the function as a destination for itself."),
        ]
        for kwargs, code, message in refusals:
            with pytest.raises(client.exceptions.ClientError) as info:
                await call(client, "put_function_event_invoke_config", **kwargs)
            assert info.value.response["Error"]["Code"] == code, kwargs
            assert info.value.response["Error"]["Message"] == message
        url = f"http://127.0.0.1:{app.api_port}/2019-09-25/functions/f/event-invoke-config"
        async with aiohttp.ClientSession() as http, http.put(url, json={  # a shape no SDK would send
                "DestinationConfig": {"OnSuccess": queue_arn("ok"), "Elsewhere": {}}}) as r:
            assert r.status == 400
            assert r.headers["X-Amzn-ErrorType"] == "InvalidParameterValueException"
            assert (await r.json())["message"].startswith("Invalid EventInvokeConfig: ")
        with pytest.raises(client.exceptions.ResourceNotFoundException) as unknown:
            await asyncio.to_thread(client.put_function_event_invoke_config, FunctionName="nope",
                                    MaximumRetryAttempts=1)
        assert unknown.value.response["Error"]["Message"] == "The function doesn't exist."
        s3_on_failure = await call(client, "put_function_event_invoke_config",
                                   DestinationConfig={"OnFailure": {"Destination": "arn:aws:s3:::bucket"}})
        assert s3_on_failure["DestinationConfig"]["OnFailure"] == {"Destination": "arn:aws:s3:::bucket"}


async def test_the_config_files_setting_is_shown(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    functions = fn(target, EventInvokeConfig={"MaximumRetryAttempts": 1})
    async with broker.run(functions, [], **FAST) as app:
        got = await call(lambda_client(app), "get_function_event_invoke_config")
    assert got["MaximumRetryAttempts"] == 1
    assert "MaximumEventAgeInSeconds" not in got  # not set in the file
    assert got["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}


async def test_a_put_reaches_the_workers_of_every_replica(broker: BrokerRunner, target: RecordingTarget,
                                                          aws: Aws) -> None:
    """The file says 2 retries to no destination; an API put (on one replica) of 0 retries and an
    OnFailure queue is applied by another replica's worker within about a second."""
    failed = await aws.create_queue("failed")
    target.responder = failing
    async with broker.run(fn(target), [], **FAST) as first:
        other = BrokerRunner(broker._redis, broker._moto, broker._tmp / "other")
        (broker._tmp / "other").mkdir()
        async with other.run(fn(target), [], **FAST) as second:
            await call(lambda_client(first), "put_function_event_invoke_config", MaximumRetryAttempts=0,
                       DestinationConfig={"OnFailure": {"Destination": queue_arn("failed")}})
            await asyncio.sleep(1.5)  # the workers re-read the shared config each second
            accepted = await invoke(lambda_client(second), FunctionName="f", InvocationType="Event",
                                    Payload=json.dumps({"n": 1}))
            messages = await aws.drain(failed, 1)
    record = json.loads(messages[0]["Body"])
    assert record["requestContext"]["requestId"] == accepted["ResponseMetadata"]["RequestId"]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1  # MaximumRetryAttempts 0: no retry
    assert len(target.calls) == 1
