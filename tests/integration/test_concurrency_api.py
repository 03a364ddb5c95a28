"""Lambda's concurrency API (docs/aws-semantics.md, "Concurrency") through boto3's Lambda client: GetAccountSettings,
Get/Put/DeleteFunctionConcurrency, the 100-unreserved floor, and a reservation set on one replica
throttling invocations on another."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import BrokerRunner
from tests.integration.helpers import respond_json
from tests.integration.test_async_invoke import FAST, invoke, lambda_client
from tests.servers import ACCOUNT, REGION, Aws, RecordingTarget

SETTINGS = {**FAST, "account_concurrency": 300}


def functions(target: RecordingTarget) -> dict[str, Any]:
    return {"f": {"Target": {"Url": target.url}}, "g": {"Target": {"Url": target.url}, "ReservedConcurrentExecutions": 50}}


async def call(client: Any, method: str, **kwargs: Any) -> Any:
    response = await asyncio.to_thread(getattr(client, method), **kwargs)
    response.pop("ResponseMetadata")
    return response


async def test_settings_and_reservations(broker: BrokerRunner, target: RecordingTarget, aws: Aws) -> None:
    async with broker.run(functions(target), [], **SETTINGS) as app:
        client = lambda_client(app)
        settings = await call(client, "get_account_settings")
        assert settings["AccountLimit"]["ConcurrentExecutions"] == 300
        assert settings["AccountLimit"]["UnreservedConcurrentExecutions"] == 250
        assert settings["AccountUsage"]["FunctionCount"] == 2
        assert await call(client, "get_function_concurrency", FunctionName="g") == {"ReservedConcurrentExecutions": 50}
        assert await call(client, "get_function_concurrency", FunctionName="f") == {}

        put = await call(client, "put_function_concurrency", FunctionName="f", ReservedConcurrentExecutions=120)
        assert put == {"ReservedConcurrentExecutions": 120}
        assert (await call(client, "get_account_settings"))["AccountLimit"]["UnreservedConcurrentExecutions"] == 130
        with pytest.raises(client.exceptions.InvalidParameterValueException) as refused:
            await call(client, "put_function_concurrency", FunctionName="f", ReservedConcurrentExecutions=151)
        assert refused.value.response["Error"]["Message"] == (
            "Specified ReservedConcurrentExecutions for function decreases account's "
            "UnreservedConcurrentExecution below its minimum value of [100].")
        await call(client, "delete_function_concurrency", FunctionName="g")
        assert await call(client, "get_function_concurrency", FunctionName="g") == {}
        assert (await call(client, "get_account_settings"))["AccountLimit"]["UnreservedConcurrentExecutions"] == 180
        with pytest.raises(client.exceptions.ResourceNotFoundException) as unknown:
            await call(client, "get_function_concurrency", FunctionName="nope")
        assert unknown.value.response["Error"]["Message"] == f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:nope"


async def test_a_reservation_applies_on_every_replica(broker: BrokerRunner, target: RecordingTarget,
                                                     aws: Aws) -> None:
    """0 reserved through one replica throttles sync invokes on another with Lambda's Reason;
    deleting the reservation lets them run again (on the account's pool)."""
    target.responder = lambda event, call: respond_json({"ran": event})
    async with broker.run(functions(target), [], **SETTINGS) as first:
        other = BrokerRunner(broker._redis, broker._moto, broker._tmp / "other")
        (broker._tmp / "other").mkdir()
        async with other.run(functions(target), [], **SETTINGS) as second:
            await call(lambda_client(first), "put_function_concurrency", FunctionName="f",
                       ReservedConcurrentExecutions=0)
            client = lambda_client(second)
            reason = await _until_throttled(client, timeout=10)  # replicas re-read reservations each second
            assert reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
            await call(lambda_client(first), "delete_function_concurrency", FunctionName="f")
            assert await _until_throttled(client, timeout=10, want=False) is None


async def _until_throttled(client: Any, *, timeout: float, want: bool = True) -> str | None:
    """Invoke until the outcome is a throttle (its Reason) or, with ``want=False``, a run (None)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            ran = await invoke(client, FunctionName="f", Payload=json.dumps({"n": 1}))
            assert json.loads(ran["Payload"].read()) == {"ran": {"n": 1}}
            reason = None
        except client.exceptions.TooManyRequestsException as exc:
            reason = exc.response["Reason"]
        if (reason is not None) == want:
            return reason
        assert asyncio.get_running_loop().time() < deadline, "the reservation never reached this replica"
        await asyncio.sleep(0.1)
