"""Live config reload against a running broker: a mapping added, one disabled, a broken file refused."""

from __future__ import annotations

import asyncio

import aiohttp

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


async def test_a_reload_with_a_broken_handler_keeps_the_broker_up(aws: Aws, broker: BrokerRunner,
                                                                  target: RecordingTarget) -> None:
    """A reload that names a Handler that cannot be imported leaves that function out (logged and
    counted) while everything else runs on; fixing the file brings it back."""
    from structlog.testing import capture_logs  # noqa: PLC0415

    from tests.conftest import metric  # noqa: PLC0415

    queue = await aws.create_queue("steady", VisibilityTimeout=30)
    m = {"FunctionName": "f", "EventSourceArn": queue_arn("steady")}
    functions = function(target)
    with capture_logs() as logs:
        async with broker.run(functions, [m], **FAST) as app:
            broken = {**functions, "g": {"Target": {"Handler": "no_such_module_anywhere:handler"}}}
            broker.write_config(broken, [m], **FAST)
            await wait_until(lambda: any(e["event"] == "function_not_started" for e in logs), timeout=15)
            assert metric(app, "broker_config_reload_failures_total") == 1
            await aws.send(queue, "still flowing")
            await target.wait_for(lambda calls: "still flowing" in target.bodies())
            fixed = {**functions, "g": {"Target": {"Url": target.url}}}
            broker.write_config(fixed, [m], **FAST)
            await wait_until(lambda: "g" in app.functions, timeout=15)
    refusal = next(e for e in logs if e["event"] == "function_not_started")
    assert refusal["error"].startswith("functions.g.Target.Handler: cannot import no_such_module_anywhere")


async def test_a_reload_that_changes_a_function_moves_its_api_mappings_too(aws: Aws, broker: BrokerRunner,
                                                                          target: RecordingTarget) -> None:
    """A mapping created through the API runs on the function as the file defines it now: when a reload
    changes the function (here its target), the API mapping invokes the new one, as file mappings do."""
    moved = RecordingTarget()
    await moved.start()
    queue = await aws.create_queue("api-mapped", VisibilityTimeout=30)
    try:
        async with broker.run(function(target), [], **FAST) as app:
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{app.api_port}/2015-03-31/event-source-mappings",
                    json={"FunctionName": "f", "EventSourceArn": queue_arn("api-mapped"), "BatchSize": 1}) as resp:
                assert resp.status == 202, await resp.text()
                uuid = (await resp.json())["UUID"]
            await wait_until(lambda: uuid in app.runners and app.runners[uuid].state == "Enabled")
            await aws.send(queue, "before")
            await target.wait_for(lambda calls: "before" in target.bodies())
            broker.write_config(function(moved), [], **FAST)
            await wait_until(lambda: app.config.functions["f"].Target.Url == moved.url)
            await aws.send(queue, "after")
            await moved.wait_for(lambda calls: "after" in moved.bodies())
    finally:
        await moved.stop()
    assert target.bodies() == ["before"]
