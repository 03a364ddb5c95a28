"""The lean GetRecords path (botocore's signer + aiohttp) reads, pages, expires iterators and
classifies failures exactly like the aiobotocore path it replaces, against kinesalite and against a
server that answers with Kinesis's throttle and 5xx errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from broker.aws.clients import RAW, AwsClients, call, keep_raw_json
from broker.embedded import free_port
from broker.errors import AwsError, AwsThrottled
from tests.servers import Aws, Kinesalite, put_records, wait_active


@pytest.fixture
async def clients(kinesalite: Kinesalite) -> AsyncIterator[AwsClients]:
    aws = AwsClients(region="us-east-1", endpoint_url=kinesalite.url)
    yield aws
    await aws.aclose()


async def _paths(aws: AwsClients) -> dict[str, Any]:
    client = await aws.client("kinesis")
    keep_raw_json(client, "GetRecords")
    lean = await aws.lean("kinesis", "GetRecords")
    assert lean is not None
    return {"aiobotocore": client.get_records, "lean": lean}


async def _read_all(get_records: Any, iterator: str) -> list[tuple[str, str, str]]:
    out = []
    for _ in range(20):
        page = (await call(get_records, ShardIterator=iterator, Limit=7))[RAW]
        out += [(r["SequenceNumber"], r["PartitionKey"], r["Data"]) for r in page["Records"]]
        iterator = page["NextShardIterator"]
        if not page["Records"]:
            break
    return out


async def test_same_records_and_same_expiry(kinesalite: Kinesalite, clients: AwsClients) -> None:
    aws = Aws(kinesalite.url)
    try:
        await aws.call("kinesis", "create_stream", StreamName="lean", ShardCount=1)
        await wait_active(aws, "lean")
        await put_records(aws, "lean", [(f"k{i}", json.dumps({"n": i}).encode()) for i in range(30)])
        paths = await _paths(clients)
        client = await clients.client("kinesis")
        seen = {}
        for name, get_records in paths.items():
            iterator = (await client.get_shard_iterator(StreamName="lean", ShardId="shardId-000000000000",
                                                        ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
            seen[name] = await _read_all(get_records, iterator)
        assert len(seen["lean"]) == 30
        assert seen["lean"] == seen["aiobotocore"]
        iterators = [(await client.get_shard_iterator(StreamName="lean", ShardId="shardId-000000000000",
                                                      ShardIteratorType="LATEST"))["ShardIterator"] for _ in paths]
        kinesalite.expire_iterators()
        for (name, get_records), iterator in zip(paths.items(), iterators, strict=True):
            with pytest.raises(AwsError) as info:
                await call(get_records, ShardIterator=iterator, Limit=1)
            assert info.value.code == "ExpiredIteratorException", name
            assert not info.value.retryable, name
    finally:
        aws.close()


@pytest.mark.parametrize(("status", "body"), [
    (400, {"__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded for shard"}),
    (400, {"__type": "com.amazonaws.kinesis#LimitExceededException", "message": "slow down"}),
    (500, {"__type": "InternalFailure", "message": "oops"}),
    (503, {"message": "unavailable"}),
])
async def test_same_classification_of_throttles_and_faults(status: int, body: dict[str, Any]) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response(body, status=status, content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    aws = AwsClients(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")
    try:
        for name, get_records in (await _paths(aws)).items():
            with pytest.raises(AwsThrottled) as info:
                await call(get_records, attempts=1, ShardIterator="x", Limit=1)
            assert info.value.retryable, name
    finally:
        await aws.aclose()
        await runner.cleanup()


async def test_unreachable_is_retryable_on_both_paths() -> None:
    aws = AwsClients(region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}")
    try:
        for name, get_records in (await _paths(aws)).items():
            with pytest.raises(AwsThrottled):
                await call(get_records, attempts=1, ShardIterator="x", Limit=1)
            assert name
    finally:
        await aws.aclose()
