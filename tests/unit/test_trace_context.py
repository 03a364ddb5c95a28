"""X-Ray's trace header and W3C Trace Context convert into each other exactly."""

from __future__ import annotations

from broker.tracing.context import TraceContext

XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
W3C = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"


def test_the_two_forms_convert_exactly() -> None:
    ctx = TraceContext.from_xray(XRAY)
    assert ctx == TraceContext("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)
    assert ctx.traceparent == W3C
    assert ctx.xray == XRAY
    assert TraceContext.from_traceparent(W3C) == ctx
    assert ctx.xray_trace_id == "1-5759e988-bd862e3fe1be46a994272793"


def test_fields_in_any_order_and_unsampled() -> None:
    ctx = TraceContext.from_xray("Sampled=0;Lineage=a87bd80c:1|68fd508a:5;Root=1-5759E988-BD862E3FE1BE46A994272793")
    assert ctx is not None
    assert (ctx.trace_id, ctx.sampled) == ("5759e988bd862e3fe1be46a994272793", False)
    assert len(ctx.parent_id) == 16, "a root without a parent gets a span id"
    assert ctx.traceparent.endswith("-00")


def test_unreadable_headers_start_no_trace() -> None:
    for bad in ("", "Root=2-5759e988-bd86", "Parent=53995c3f42cd8ad8", "nonsense"):
        assert TraceContext.from_xray(bad) is None, bad
    for bad in ("", "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
                "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01", "ff-" + W3C[3:], "01-abc"):
        assert TraceContext.from_traceparent(bad) is None, bad
    assert TraceContext.from_headers(None, XRAY) == TraceContext.from_xray(XRAY)
    assert TraceContext.from_headers(W3C, "Root=1-00000000-000000000000000000000000") == TraceContext.from_xray(XRAY)


def test_a_child_is_a_new_span_of_the_same_trace() -> None:
    ctx = TraceContext.from_traceparent(W3C)
    assert ctx is not None
    child = ctx.child()
    assert (child.trace_id, child.sampled) == (ctx.trace_id, ctx.sampled)
    assert child.parent_id != ctx.parent_id
    new = TraceContext.new(sampled=False, now=0x5759E988)
    assert new.trace_id.startswith("5759e988")
    assert TraceContext.from_xray(new.xray) == new
