"""Tumbling windows (docs/aws-semantics.md, "Tumbling windows", "Event shapes") on Kinesis and DynamoDB Streams mappings: the TimeWindowEvent
shape, state passed from one invocation of a window to the next, batches never spanning windows,
the final invocation, a response without state failing, and the checkpoint held until the final
invocation succeeds."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from typing import Any

from aiohttp import web

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, respond_json, wait_until
from tests.integration.test_dynamodb_streams import create_table
from tests.integration.test_kinesis import FAST, mapping
from tests.servers import Aws, Call, RecordingTarget, create_stream, put_records, stream_arn

WINDOW = 2
SETTINGS = {**FAST, "tumbling_window_close_seconds": 0.5}


def summing(event: Any, call: Call) -> web.Response:
    """A windowed aggregation: the state is the running sum of ``n`` in the window."""
    total = event["state"].get("sum", 0) + sum(json.loads(_data(r))["n"] for r in event["Records"])
    return respond_json({"state": {"sum": total}})


def _data(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["kinesis"]["data"])


def _window_of(record: dict[str, Any]) -> float:
    return math.floor(record["kinesis"]["approximateArrivalTimestamp"] / WINDOW) * WINDOW


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_state_flows_through_a_window_and_the_final_invoke_gets_it(aws: Aws, broker: BrokerRunner,
                                                                         target: RecordingTarget) -> None:
    shards = await create_stream(aws, "win", shards=1)
    await put_records(aws, "win", [("k", json.dumps({"n": n}).encode()) for n in range(1, 8)])
    target.responder = summing
    m = mapping("win", BatchSize=2, TumblingWindowInSeconds=WINDOW)
    async with broker.run(function(target), [m], **SETTINGS):
        await target.wait_for(lambda calls: sum(len(c.event["Records"]) for c in calls) >= 7
                              and calls[-1].event["isFinalInvokeForWindow"])
    events = [c.event for c in target.calls]
    regular = [e for e in events if not e["isFinalInvokeForWindow"]]
    finals = [e for e in events if e["isFinalInvokeForWindow"]]
    first = regular[0]
    assert list(first) == ["Records", "window", "state", "shardId", "eventSourceARN", "isFinalInvokeForWindow",
                           "isWindowTerminatedEarly"]
    assert first["state"] == {}
    assert first["shardId"] == shards[0]
    assert first["eventSourceARN"] == stream_arn("win")
    assert first["isWindowTerminatedEarly"] is False
    by_window: dict[float, int] = {}
    for e in regular:
        windows = {_window_of(r) for r in e["Records"]}
        assert len(windows) == 1  # a batch never spans two windows
        start = windows.pop()
        assert e["window"] == {"start": _iso(start), "end": _iso(start + WINDOW)}
        assert e["state"] == ({"sum": by_window[start]} if start in by_window else {})  # the last response's state
        by_window[start] = by_window.get(start, 0) + sum(json.loads(_data(r))["n"] for r in e["Records"])
    assert sum(by_window.values()) == sum(range(1, 8))
    assert [e["Records"] for e in finals] == [[] for _ in by_window]
    assert {e["window"]["start"]: e["state"]["sum"] for e in finals} == {_iso(s): v for s, v in by_window.items()}


async def test_a_response_without_state_is_a_failed_invocation(aws: Aws, broker: BrokerRunner,
                                                               target: RecordingTarget) -> None:
    await create_stream(aws, "nostate", shards=1)
    await put_records(aws, "nostate", [("k", b'{"n": 1}')])
    target.responder = lambda event, call: respond_json({"batchItemFailures": []})
    m = mapping("nostate", TumblingWindowInSeconds=WINDOW, MaximumRetryAttempts=1)
    async with broker.run(function(target), [m], **SETTINGS) as app:
        uuid = app.config.event_source_mappings[0].UUID
        await wait_until(lambda: metric(app, "broker_dropped_events_total", function="f", mapping=uuid) == 1)
    regular = [c for c in target.calls if c.event["Records"]]
    assert len(regular) == 2  # the first try and one retry, then given up


async def test_checkpoint_waits_for_the_final_invoke(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    await create_stream(aws, "held", shards=1)
    await put_records(aws, "held", [("k", b'{"n": 5}')])
    refuse_final = True

    def responder(event: Any, call: Call) -> web.Response:
        if event["isFinalInvokeForWindow"] and refuse_final:
            return respond_json({"errorMessage": "not yet", "errorType": "Error"}, status=500)
        return summing(event, call)

    target.responder = responder
    m = mapping("held", TumblingWindowInSeconds=WINDOW)
    async with broker.run(function(target), [m], **SETTINGS) as app:
        key = f"{{broker:esm:{app.config.event_source_mappings[0].UUID}}}:checkpoints"
        await target.wait_for(lambda calls: sum(c.event["isFinalInvokeForWindow"] for c in calls) >= 2)
        assert await app.redis.hgetall(key) == {}  # the final invoke keeps failing
        refuse_final = False
        await wait_until(lambda: _checkpointed(app, key))
    finals = [c.event for c in target.calls if c.event["isFinalInvokeForWindow"]]
    assert finals[-1]["state"] == {"sum": 5}


async def _checkpointed(app: Any, key: str) -> bool:
    return bool(await app.redis.hgetall(key))


async def test_dynamodb_stream_windows(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    """The same contract on a DynamoDB stream: windows by ApproximateCreationDateTime, the stream's
    ARN and shard in every event, and a final invocation carrying the window's state."""
    arn = await create_table(aws, "counts")
    for i in range(4):
        await aws.call("dynamodb", "put_item", TableName="counts", Item={"id": {"S": f"i{i}"}})

    def counting(event: Any, call: Call) -> web.Response:
        return respond_json({"state": {"items": event["state"].get("items", 0) + len(event["Records"])}})

    target.responder = counting
    m = {"FunctionName": "f", "EventSourceArn": arn, "StartingPosition": "TRIM_HORIZON", "BatchSize": 3,
         "TumblingWindowInSeconds": WINDOW}
    settings = {"dynamodb_poll_interval_seconds": 0.1, "stream_discovery_interval_seconds": 1,
                "tumbling_window_close_seconds": 0.5}
    async with broker.run(function(target), [m], **settings):
        await target.wait_for(lambda calls: sum(len(c.event["Records"]) for c in calls) >= 4
                              and calls[-1].event["isFinalInvokeForWindow"])
    events = [c.event for c in target.calls]
    assert {e["eventSourceARN"] for e in events} == {arn}
    assert len({e["shardId"] for e in events}) == 1
    finals = [e for e in events if e["isFinalInvokeForWindow"]]
    assert sum(e["state"]["items"] for e in finals) == 4
    for e in events:
        starts = {math.floor(r["dynamodb"]["ApproximateCreationDateTime"] / WINDOW) * WINDOW for r in e["Records"]}
        assert len(starts) <= 1
        assert not starts or e["window"]["start"] == _iso(starts.pop())
