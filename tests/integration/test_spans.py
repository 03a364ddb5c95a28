"""OpenTelemetry spans at a local OTLP/HTTP receiver (decoded with opentelemetry-proto): an SQS
batch span in the message's trace with the messaging attributes and a link to the record, its
invocation as a child whose span id the target receives as traceparent's parent; an Event invoke's
enqueue, process and invocation spans, each the parent of the next; and stopping the receiver
loses no record (the spans it missed are counted)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import BrokerRunner, metric
from tests.integration.helpers import function, wait_until
from tests.servers import Aws, RecordingTarget, free_port, queue_arn

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
TRACE_ID = "5759e988bd862e3fe1be46a994272793"
XRAY = f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1"


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span it got, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource in message.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}.get("service.name")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    self.spans.append({
                        "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(), "kind": s.kind, "service": service,
                        "attributes": {a.key: _value(a.value) for a in s.attributes},
                        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        "events": [e.name for e in s.events], "status": s.status.code})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


async def test_spans_for_a_batch_and_an_event(aws: Aws, broker: BrokerRunner, target: RecordingTarget) -> None:
    receiver = Receiver()
    await receiver.start()
    url = await aws.create_queue("spanned")
    await aws.call("sqs", "send_message", QueueUrl=url, MessageBody="hello",
                   MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": XRAY}})
    m = {"FunctionName": "f", "EventSourceArn": queue_arn("spanned"), "BatchSize": 1}
    tracing = {"exporter": "otlp", "endpoint": f"http://127.0.0.1:{receiver.port}", "sample_ratio": 1.0,
               "service_name": "broker-under-test"}
    try:
        async with broker.run(function(target), [m], tracing=tracing) as app:
            await target.wait_for(lambda calls: len(calls) >= 1, timeout=20)
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations", data=json.dumps({"n": 1}),
                    headers={"X-Amz-Invocation-Type": "Event"}) as resp:
                assert resp.status == 202
            await target.wait_for(lambda calls: len(calls) >= 2, timeout=20)
            await wait_until(lambda: receiver.named("f enqueue") and receiver.named("f process")
                             and len(receiver.named("invoke f")) >= 2 and receiver.named("spanned process"),
                             timeout=30)

            batch = receiver.named("spanned process")[0]
            assert (batch["trace_id"], batch["parent"]) == (TRACE_ID, "53995c3f42cd8ad8"), "in the message's trace"
            assert batch["kind"] == 5, "CONSUMER"
            assert batch["service"] == "broker-under-test"
            assert batch["attributes"]["messaging.system"] == "aws_sqs"
            assert batch["attributes"]["messaging.destination.name"] == "spanned"
            assert batch["attributes"]["messaging.batch.message_count"] == 1
            assert batch["links"] == [(TRACE_ID, "53995c3f42cd8ad8")], "linked to the record's context"
            invoke = next(s for s in receiver.named("invoke f") if s["parent"] == batch["span_id"])
            assert invoke["trace_id"] == TRACE_ID
            assert invoke["kind"] == 3, "CLIENT"
            assert invoke["attributes"]["faas.invoked_name"] == "f"
            assert invoke["attributes"]["broker.outcome"] == "success"
            sqs_call = target.calls[0]
            assert sqs_call.headers["traceparent"] == f"00-{TRACE_ID}-{invoke['span_id']}-01"

            enqueue, process = receiver.named("f enqueue")[0], receiver.named("f process")[0]
            assert enqueue["kind"] == 4, "PRODUCER"
            assert (process["trace_id"], process["parent"]) == (enqueue["trace_id"], enqueue["span_id"])
            event_invoke = next(s for s in receiver.named("invoke f") if s["parent"] == process["span_id"])
            assert target.calls[1].headers["traceparent"].split("-")[1:3] == [enqueue["trace_id"],
                                                                              event_invoke["span_id"]]

            await receiver.stop()  # the collector goes away mid-flow
            await aws.send_batch(url, [f"m{i}" for i in range(20)])
            await target.wait_for(lambda calls: len(calls) >= 22, timeout=30)
            bodies = sorted(r["body"] for c in target.calls[2:] for r in c.event["Records"])
            assert bodies == sorted(f"m{i}" for i in range(20)), "no record lost while spans cannot be exported"
            await wait_until(lambda: metric(app, "broker_trace_spans_dropped_total") > 0, timeout=30)
    finally:
        await receiver.stop()
        await asyncio.sleep(0)
