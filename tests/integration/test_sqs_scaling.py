"""SQS pollers: FIFO group order under concurrency, scaling bounds, pause and resume (docs/aws-semantics.md, "SQS polling and deletion")."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.servers import Aws, Call, RecordingTarget, queue_arn


async def test_fifo_keeps_group_order_under_concurrency(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Three groups, several pollers: per-group order holds and a group is never in two batches at once."""
    url = await aws.create_queue("orders.fifo", VisibilityTimeout=10, ContentBasedDeduplication="true")
    for group in "abc":
        for start in range(0, 8, 4):
            await aws.send_batch(url, [f"{group}{i}" for i in range(start, start + 4)], MessageGroupId=group)
    busy: set[str] = set()
    overlaps: list[str] = []

    async def answer(event: Any, call: Call) -> web.Response:
        groups = {r["attributes"]["MessageGroupId"] for r in event["Records"]}
        overlaps.extend(busy & groups)
        busy.update(groups)
        await asyncio.sleep(0.05)
        busy.difference_update(groups)
        return respond_json({})

    target.responder = answer
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("orders.fifo"), "BatchSize": 3}
    async with broker.run(function(target), [mapping], sqs_initial_pollers=3):
        await target.wait_for(lambda calls: len(target.records()) >= 24, timeout=30)
    per_group: dict[str, list[int]] = collections.defaultdict(list)
    for body in target.bodies():
        per_group[body[0]].append(int(body[1:]))
    assert per_group == {g: list(range(8)) for g in "abc"}
    assert overlaps == []


async def test_fifo_failed_item_holds_back_later_group_messages(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """If the function reports only a1 failed, a2 (same group, later) is not deleted either."""
    url = await aws.create_queue("hold.fifo", VisibilityTimeout=1, ContentBasedDeduplication="true")
    await aws.send_batch(url, ["a1", "a2", "a3"], MessageGroupId="a")

    def answer(event: Any, call: Call) -> web.Response:
        failed = [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                  if r["body"] == "a1" and r["attributes"]["ApproximateReceiveCount"] == "1"]
        return respond_json({"batchItemFailures": failed})

    target.responder = answer
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("hold.fifo"), "BatchSize": 10,
               "FunctionResponseTypes": ["ReportBatchItemFailures"]}
    async with broker.run(function(target, Timeout=1), [mapping], sqs_initial_pollers=1, sqs_min_pollers=1):
        # (the emulator does not keep FIFO order on redelivery, so only what was kept is compared)
        await target.wait_for(lambda calls: sorted(r["body"] for r in target.records()
                                                   if r["attributes"]["ApproximateReceiveCount"] == "2") == ["a1", "a2", "a3"])
    assert [r["body"] for r in target.calls[0].event["Records"]] == ["a1", "a2", "a3"]


async def test_pollers_grow_with_full_batches_up_to_maximum_concurrency(aws: Aws, broker: BrokerRunner,
                                                                         target: RecordingTarget) -> None:
    """Starting from one poller, full batches add pollers; MaximumConcurrency caps them and the target's peak."""
    url = await aws.create_queue("scale", VisibilityTimeout=30)
    await aws.send_batch(url, [str(i) for i in range(40)])

    async def answer(event: Any, call: Call) -> web.Response:
        await asyncio.sleep(0.2)
        return respond_json({})

    target.responder = answer
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("scale"), "BatchSize": 1,
               "ScalingConfig": {"MaximumConcurrency": 3}}
    async with broker.run(function(target), [mapping], sqs_initial_pollers=1, sqs_scale_up_per_minute=600) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        await target.wait_for(lambda calls: len(calls) >= 40, timeout=40)
        assert app.metrics.registry.get_sample_value("broker_sqs_pollers", {"function": "f", "mapping": uuid}) <= 3
    assert target.peak == 3


async def test_initial_pollers_never_exceed_maximum_concurrency(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Lambda starts 5 pollers, but never more than MaximumConcurrency."""
    url = await aws.create_queue("cap", VisibilityTimeout=30)
    await aws.send_batch(url, [str(i) for i in range(12)])

    async def answer(event: Any, call: Call) -> web.Response:
        await asyncio.sleep(0.2)
        return respond_json({})

    target.responder = answer
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("cap"), "BatchSize": 1,
               "ScalingConfig": {"MaximumConcurrency": 2}}
    async with broker.run(function(target), [mapping]):
        await target.wait_for(lambda calls: len(calls) >= 12, timeout=30)
    assert target.peak == 2


async def test_pause_and_resume_through_the_api(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """PUT Enabled=false stops delivery; Enabled=true resumes it; GET shows the State."""
    url = await aws.create_queue("pause", VisibilityTimeout=30)
    async with broker.run(function(target), [{"FunctionName": "f", "EventSourceArn": queue_arn("pause")}],
                          sqs_initial_pollers=1, sqs_min_pollers=1) as app:
        uuid = app.config.event_source_mappings[0].UUID
        base = f"http://127.0.0.1:{app.api_port}/2015-03-31/event-source-mappings/{uuid}"
        async with aiohttp.ClientSession() as http:
            async with http.put(base, json={"Enabled": False}) as resp:
                assert resp.status == 202
                assert (await resp.json())["State"] in ("Disabling", "Disabled")

            async def state() -> str:
                async with http.get(base) as r:
                    return str((await r.json())["State"])

            await wait_until(lambda: _is(state(), "Disabled"))
            await aws.send(url, "while paused")
            await asyncio.sleep(2)
            assert target.calls == []
            async with http.put(base, json={"Enabled": True}) as resp:
                assert resp.status == 202
            await target.wait_for(lambda calls: len(calls) >= 1)
            assert await state() == "Enabled"
            async with http.put(base, json={"BatchSize": 5}) as resp:
                assert resp.status == 400
                assert resp.headers["X-Amzn-ErrorType"] == "InvalidParameterValueException"
            async with http.get(base[:-3] + "zzz") as resp:
                assert resp.status == 404
                assert resp.headers["X-Amzn-ErrorType"] == "ResourceNotFoundException"
        assert metric(app, "broker_mapping_enabled", function="f", mapping=uuid or "") == 1
    assert target.bodies() == ["while paused"]


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)
