"""Odd input gets a clear 4xx, never silent acceptance: bodies that are not UTF-8 JSON, NaN,
Infinity and numbers that overflow, a qualifier where reserved concurrency has none, destination
ARNs without a resource name."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import BrokerRunner
from tests.integration.helpers import function
from tests.servers import RecordingTarget


@pytest.mark.parametrize("body", [b'{"a": "\xff\xfe"}', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
                                  b'{"a": 1e999}', b"{not json"], ids=["bad-utf8", "nan", "inf", "-inf", "overflow",
                                                                      "syntax"])
async def test_bodies_lambda_cannot_parse_are_refused(broker: BrokerRunner, target: RecordingTarget,
                                                      body: bytes) -> None:
    async with broker.run(function(target), []) as app, aiohttp.ClientSession() as http:
        for kind in ("Event", "RequestResponse"):
            async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations", data=body,
                                 headers={"X-Amz-Invocation-Type": kind}) as resp:
                assert resp.status == 400
                assert resp.headers["X-Amzn-ErrorType"] == "InvalidRequestContentException"
                message = (await resp.json())["message"]
                assert message.startswith("Could not parse request body into json: "), message
    assert not target.calls


async def test_qualifiers_and_nameless_destinations_are_refused(broker: BrokerRunner, target: RecordingTarget) -> None:
    async with broker.run(function(target), []) as app, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{app.api_port}"
        for path in ("/2017-10-31/functions/f:1/concurrency", "/2017-10-31/functions/f/concurrency?Qualifier=prod"):
            async with http.put(base + path, json={"ReservedConcurrentExecutions": 1}) as resp:
                assert resp.status == 400, path
                assert resp.headers["X-Amzn-ErrorType"] == "InvalidParameterValueException"
        async with http.get(base + "/2019-09-30/functions/f:live/concurrency") as resp:
            assert resp.status == 400
        for arn in ("arn:aws:sqs:us-east-1:000000000000:", "arn:aws:sns:us-east-1:000000000000:",
                    "arn:aws:lambda:us-east-1:000000000000:function:"):
            async with http.put(base + "/2019-09-25/functions/f/event-invoke-config",
                                data=json.dumps({"DestinationConfig": {"OnFailure": {"Destination": arn}}})) as resp:
                assert resp.status == 400, arn
                assert resp.headers["X-Amzn-ErrorType"] == "InvalidParameterValueException"
        async with http.put(base + "/2017-10-31/functions/f/concurrency",
                            data=b'{"ReservedConcurrentExecutions": NaN}') as resp:
            assert resp.status == 400
