"""The hand-written spans and OTLP encoder against opentelemetry-proto's own decoder: every field the
broker's spans use comes back as it went in; sampling follows the caller's flag, then the ratio;
tracing off records nothing."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from broker.tracing import otlp
from broker.tracing.context import TraceContext
from broker.tracing.spans import _Tracing

LINK = TraceContext("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, by: int = 1) -> None:
        self.value += by


def _recording(ratio: float = 1.0) -> tuple[_Tracing, list[otlp.Recorded]]:
    """A tracing that records (its export thread never started): what it finished, in order."""
    tracing = _Tracing()
    tracing.on, tracing.ratio = True, ratio
    finished: list[otlp.Recorded] = []
    tracing.finished = finished.append  # type: ignore[method-assign]
    return tracing, finished


def test_spans_decode_as_they_were_made() -> None:
    tracing, finished = _recording()
    with tracing.span("batch", parent=LINK, kind="consumer", links=[LINK], messaging__batch__message_count=3,
                      ratio=0.5, on=True, negative=-2, queue="q") as batch:
        with tracing.span("invoke f", parent=batch.context, kind="client") as invoke:
            invoke.event("throttled", reason="ReservedFunctionConcurrentInvocationLimitExceeded")
            invoke.failed("Unhandled")
        invoke_context = invoke.context
    decoded = ExportTraceServiceRequest.FromString(otlp.encode(finished, {"service.name": "svc"}, ("broker", "1")))
    (resource,) = decoded.resource_spans
    assert {a.key: a.value.string_value for a in resource.resource.attributes} == {"service.name": "svc"}
    (scope,) = resource.scope_spans
    assert (scope.scope.name, scope.scope.version) == ("broker", "1")
    invoke_span, batch_span = scope.spans
    assert batch_span.name == "batch"
    assert batch_span.kind == 5
    assert batch_span.trace_id.hex() == LINK.trace_id
    assert batch_span.parent_span_id.hex() == LINK.parent_id, "the caller's span is the parent"
    assert batch_span.span_id.hex() == batch.context.parent_id, "children continue from this span"
    values = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in batch_span.attributes}
    assert values == {"messaging.batch.message_count": 3, "ratio": 0.5, "on": True, "negative": -2, "queue": "q"}
    assert [(x.trace_id.hex(), x.span_id.hex()) for x in batch_span.links] == [(LINK.trace_id, LINK.parent_id)]
    assert batch_span.end_time_unix_nano >= batch_span.start_time_unix_nano > 0
    assert invoke_span.parent_span_id == batch_span.span_id
    assert invoke_span.span_id.hex() == invoke_context.parent_id, "what the target gets as its parent"
    assert invoke_span.kind == 3
    assert [e.name for e in invoke_span.events] == ["throttled"]
    assert invoke_span.events[0].attributes[0].value.string_value == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert (invoke_span.status.code, invoke_span.status.message) == (2, "Unhandled")


def test_sampling_follows_the_caller_then_the_ratio() -> None:
    tracing, finished = _recording(ratio=0.0)
    unsampled = TraceContext(LINK.trace_id, LINK.parent_id, False)
    with tracing.span("not sampled", parent=unsampled) as span:
        assert span.context.sampled is False
        assert span.context.trace_id == LINK.trace_id, "the trace goes on, unrecorded"
    with tracing.span("sampled by its caller", parent=LINK):
        pass
    with tracing.span("a new trace at ratio 0", parent=None) as root:
        assert root.context.sampled is False
    assert [s.name for s in finished] == ["sampled by its caller"]


def test_an_exception_is_recorded_and_goes_on() -> None:
    tracing, finished = _recording()
    try:
        with tracing.span("failing", parent=None):
            raise ValueError("boom")
    except ValueError:
        pass
    (span,) = finished
    assert span.status == (2, "ValueError: boom")
    assert span.events[0][0] == "exception"


def test_off_records_nothing() -> None:
    tracing = _Tracing()
    with tracing.span("x", parent=LINK) as span:
        span.set(a=1)
        span.event("e")
        span.failed("f")
    assert span.context.trace_id == LINK.trace_id
    assert span.context.parent_id != LINK.parent_id


def test_a_full_queue_drops_and_counts() -> None:
    tracing = _Tracing()
    tracing.on, tracing.ratio = True, 1.0
    dropped = _Counter()
    tracing._dropped = dropped
    for _ in range(8192 + 5):
        with tracing.span("x", parent=None):
            pass
    assert dropped.value == 5
