"""SQS batching by size, by window and by bytes; filters delete what they drop (docs/aws-semantics.md, "Mapping parameters", "Event filtering", "Payload size and batch cutting")."""

from __future__ import annotations

import json
import time

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, wait_until
from tests.servers import Aws, RecordingTarget, queue_arn


async def test_batch_by_size(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """25 queued messages with BatchSize 25 arrive as one batch of 25 (several receives of 10)."""
    url = await aws.create_queue("size", VisibilityTimeout=30)
    await aws.send_batch(url, [f"m{i}" for i in range(25)])
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("size"), "BatchSize": 25,
               "MaximumBatchingWindowInSeconds": 10}
    async with broker.run(function(target), [mapping], sqs_initial_pollers=1, sqs_min_pollers=1):
        calls = await target.wait_for(lambda calls: len(calls) >= 1)
    assert len(calls[0].event["Records"]) == 25
    assert sorted(target.bodies()) == sorted(f"m{i}" for i in range(25))


async def test_batch_by_window(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """With a 2 s window and few messages, the batch is sent when the window closes, not before."""
    url = await aws.create_queue("window", VisibilityTimeout=30)
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("window"), "BatchSize": 100,
               "MaximumBatchingWindowInSeconds": 2}
    async with broker.run(function(target), [mapping], sqs_initial_pollers=1, sqs_min_pollers=1):
        sent_at = time.monotonic()
        await aws.send(url, "a", "b", "c")
        calls = await target.wait_for(lambda calls: len(calls) >= 1)
    assert [r["body"] for r in calls[0].event["Records"]] == ["a", "b", "c"]
    assert calls[0].at - sent_at >= 1.5


async def test_batch_cut_before_6_mib(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """30 messages of 250 kB (7.5 MB) never go in one event: every payload stays within 6 MiB."""
    url = await aws.create_queue("bytes", VisibilityTimeout=60)
    bodies = [f"{i:03d}" + "x" * 250_000 for i in range(30)]
    for start in range(0, 30, 4):  # SendMessageBatch takes at most 1 MiB
        await aws.send_batch(url, bodies[start:start + 4])
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("bytes"), "BatchSize": 100,
               "MaximumBatchingWindowInSeconds": 3}
    async with broker.run(function(target, Timeout=10), [mapping], sqs_initial_pollers=1, sqs_min_pollers=1):
        await target.wait_for(lambda calls: len(target.records()) >= 30, timeout=60)
    sizes = [len(json.dumps(c.event, separators=(",", ":"))) for c in target.calls]
    assert len(target.calls) >= 2
    assert max(sizes) <= 6 * 1024 * 1024
    assert sorted(b[:3] for b in target.bodies()) == [f"{i:03d}" for i in range(30)]


async def test_filter_drops_and_deletes(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """Only matching messages reach the target; the others are deleted and counted."""
    url = await aws.create_queue("filtered", VisibilityTimeout=30)
    await aws.send(url, json.dumps({"type": "order", "n": 1}), json.dumps({"type": "refund"}), "plain order")
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("filtered"),
               "FilterCriteria": {"Filters": [{"Pattern": '{"body": {"type": ["order"]}}'}]}}
    async with broker.run(function(target), [mapping], sqs_initial_pollers=1, sqs_min_pollers=1) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        await wait_until(lambda: metric(app, "broker_filtered_out_events_total", function="f", mapping=uuid) >= 2
                         and metric(app, "broker_deleted_events_total", function="f", mapping=uuid) >= 3)
        assert await aws.depth(url) == (0, 0)
    assert target.bodies() == [json.dumps({"type": "order", "n": 1})]


async def test_all_filtered_means_no_invocation(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A poll whose records are all filtered out invokes nothing."""
    url = await aws.create_queue("none", VisibilityTimeout=30)
    await aws.send(url, "a", "b")
    mapping = {"FunctionName": "f", "EventSourceArn": queue_arn("none"),
               "FilterCriteria": {"Filters": [{"Pattern": '{"body": ["z"]}'}]}}
    async with broker.run(function(target), [mapping], sqs_initial_pollers=1, sqs_min_pollers=1) as app:
        uuid = app.config.event_source_mappings[0].UUID or ""
        await wait_until(lambda: metric(app, "broker_filtered_out_events_total", function="f", mapping=uuid) >= 2)
        assert await aws.depth(url) == (0, 0)
    assert target.calls == []
    assert metric(app, "broker_invocations_total", function="f") == 0
