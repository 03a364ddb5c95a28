"""The hand-written OTLP encoder against opentelemetry-proto's own decoder: every field the
broker's spans use comes back as it went in."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from broker.tracing import otlp


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[object] = []

    def export(self, spans: object) -> SpanExportResult:
        self.spans.extend(spans)  # type: ignore[call-overload]
        return SpanExportResult.SUCCESS


def test_spans_decode_as_they_were_made() -> None:
    keep = _Keep()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("broker")
    link = trace.SpanContext(0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, is_remote=True)
    parent = tracer.start_span("batch", kind=trace.SpanKind.CONSUMER, links=[trace.Link(link)],
                               attributes={"messaging.batch.message_count": 3, "ratio": 0.5, "on": True,
                                           "negative": -2, "name": "q"})
    child = tracer.start_span("invoke f", context=trace.set_span_in_context(parent), kind=trace.SpanKind.CLIENT)
    child.add_event("throttled", {"reason": "ReservedFunctionConcurrentInvocationLimitExceeded"})
    child.set_status(trace.Status(trace.StatusCode.ERROR, "Unhandled"))
    child.end()
    parent.end()

    decoded = ExportTraceServiceRequest.FromString(otlp.encode(keep.spans))
    (resource,) = decoded.resource_spans
    assert {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"] == "svc"
    (scope,) = resource.scope_spans
    assert scope.scope.name == "broker"
    invoke, batch = scope.spans
    assert batch.name == "batch"
    assert batch.kind == 5
    assert batch.trace_id.hex() == format(parent.get_span_context().trace_id, "032x")
    assert batch.parent_span_id == b""
    assert {a.key: a.value.WhichOneof("value") for a in batch.attributes} == {
        "messaging.batch.message_count": "int_value", "ratio": "double_value", "on": "bool_value",
        "negative": "int_value", "name": "string_value"}
    values = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in batch.attributes}
    assert values == {"messaging.batch.message_count": 3, "ratio": 0.5, "on": True, "negative": -2, "name": "q"}
    assert [(x.trace_id.hex(), x.span_id.hex()) for x in batch.links] == [
        ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8")]
    assert batch.end_time_unix_nano >= batch.start_time_unix_nano > 0
    assert invoke.parent_span_id == batch.span_id
    assert invoke.kind == 3
    assert [e.name for e in invoke.events] == ["throttled"]
    assert invoke.events[0].attributes[0].value.string_value == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert (invoke.status.code, invoke.status.message) == (2, "Unhandled")
