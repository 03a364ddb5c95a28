"""Live config reload against a running broker: a mapping added, one disabled, a broken file refused."""

from __future__ import annotations

import asyncio

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, wait_until
from tests.servers import Aws, RecordingTarget, queue_arn

FAST = {"sqs_initial_pollers": 1, "sqs_min_pollers": 1}


async def test_add_disable_and_refuse(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    first = await aws.create_queue("first", VisibilityTimeout=30)
    second = await aws.create_queue("second", VisibilityTimeout=30)
    a = {"FunctionName": "f", "EventSourceArn": queue_arn("first")}
    b = {"FunctionName": "f", "EventSourceArn": queue_arn("second"), "BatchSize": 5}
    async with broker.run(function(target), [a], **FAST) as app:
        await aws.send(first, "one")
        await target.wait_for(lambda calls: target.bodies() == ["one"])

        broker.write_config(function(target), [{**a, "Enabled": False}, b], **FAST)
        await wait_until(lambda: len(app.runners) == 2, timeout=10)
        uuid_a = app.config.event_source_mappings[0].UUID or ""
        await wait_until(lambda: app.runners[uuid_a].state == "Disabled", timeout=10)
        await aws.send(second, "two")
        await target.wait_for(lambda calls: "two" in target.bodies())
        await aws.send(first, "while disabled")
        await asyncio.sleep(1.5)
        assert "while disabled" not in target.bodies()

        path = broker.write_config(function(target), [a, b], **FAST)
        path.write_text("functions: [this is not a config")
        await wait_until(lambda: metric(app, "broker_config_reload_failures_total") == 1, timeout=10)
        await aws.send(second, "three")
        await target.wait_for(lambda calls: "three" in target.bodies())
        assert app.runners[uuid_a].state == "Disabled"  # the running config stayed

        broker.write_config(function(target), [a, b], **FAST)  # re-enable the first mapping
        await target.wait_for(lambda calls: "while disabled" in target.bodies(), timeout=15)


async def test_changed_function_and_removed_mapping(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """A changed Timeout restarts the function's mappings with the new value; a removed mapping stops."""
    queue = await aws.create_queue("changing", VisibilityTimeout=30)
    m = {"FunctionName": "f", "EventSourceArn": queue_arn("changing")}
    async with broker.run(function(target), [m], **FAST) as app:
        broker.write_config(function(target, Timeout=7), [m], **FAST)
        await wait_until(lambda: app.functions["f"].timeout == 7, timeout=10)
        await aws.send(queue, "after change")
        await target.wait_for(lambda calls: target.bodies() == ["after change"])
        broker.write_config(function(target, Timeout=7), [], **FAST)
        await wait_until(lambda: not app.runners, timeout=10)
        await aws.send(queue, "nobody reads this")
        await asyncio.sleep(1.5)
    assert target.bodies() == ["after change"]
