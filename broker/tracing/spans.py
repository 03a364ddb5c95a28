"""Spans, through OpenTelemetry's SDK (the one boundary with it; an optional extra,
``pip install 'broker[otel]'``): a span per batch or async event (receive → process, the messaging
semantic conventions), a child span per invocation attempt, spans for async enqueues and
destination deliveries. Exported over OTLP/HTTP by the SDK's batch processor, on its own thread
off the event loop; an exporter that cannot be reached drops spans (counted in
``broker_trace_spans_dropped_total``) and never slows or stops processing.

Off (the default) a span is a small object that only carries the trace context on: nothing is
recorded, no SDK is imported. Like OpenTelemetry's own tracer provider, the tracing is one per
process (``configure`` at start, ``shutdown`` at the end), so every part reaches it without
being handed it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from typing import Any

from broker.tracing.context import TraceContext

_KINDS = ("internal", "client", "producer", "consumer")


class Span:
    """A span as the code sees it: the context its children continue from, and what to note."""

    def __init__(self, context: TraceContext, span: Any = None) -> None:
        self.context = context
        self._span = span

    def set(self, **attributes: Any) -> None:
        if self._span is not None:
            self._span.set_attributes({k.replace("__", "."): v for k, v in attributes.items() if v is not None})

    def event(self, name: str, **attributes: Any) -> None:
        if self._span is not None:
            self._span.add_event(name, {k: v for k, v in attributes.items() if v is not None})

    def failed(self, description: str) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - the SDK only when on

            self._span.set_status(Status(StatusCode.ERROR, description))


class _Tracing:
    def __init__(self) -> None:
        self._tracer: Any = None
        self._provider: Any = None
        self.ratio = 0.0  # new traces: sampled with this probability (off: never)

    @property
    def on(self) -> bool:
        return self._tracer is not None

    def new_trace(self, now: float) -> TraceContext:
        import random  # noqa: PLC0415

        return TraceContext.new(sampled=self.on and random.random() < self.ratio, now=now)

    @contextlib.contextmanager
    def span(self, name: str, *, parent: TraceContext | None, kind: str = "internal",
             links: Sequence[TraceContext] = (), now: float = 0.0, **attributes: Any) -> Iterator[Span]:
        if self._tracer is None:
            yield Span(parent.child() if parent is not None else self.new_trace(now))
            return
        from opentelemetry import trace  # noqa: PLC0415

        span = self._tracer.start_span(
            name, context=trace.set_span_in_context(trace.NonRecordingSpan(_span_context(parent)))
            if parent is not None else None,
            kind=getattr(trace.SpanKind, kind.upper()), links=[trace.Link(_span_context(link)) for link in links],
            attributes={k.replace("__", "."): v for k, v in attributes.items() if v is not None})
        sc = span.get_span_context()
        try:
            yield Span(TraceContext(trace.format_trace_id(sc.trace_id), trace.format_span_id(sc.span_id),
                                    bool(sc.trace_flags & 0x01)), span)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()

    def configure(self, *, endpoint: str | None, sample_ratio: float, service_name: str, dropped: Any) -> None:
        """Spans from now on, exported to ``endpoint`` (OTLP/HTTP; None: the OTEL_* variables)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

        class Counted(SpanExporter):
            """The exporter, counting the spans it could not deliver (the collector away)."""

            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def export(self, batch: Sequence[Any]) -> Any:
                try:
                    result = self._inner.export(batch)
                except Exception:  # whatever the exporter meets, processing goes on
                    result = SpanExportResult.FAILURE
                if result is not SpanExportResult.SUCCESS:
                    dropped.inc(len(batch))
                return result

            def shutdown(self) -> None:
                self._inner.shutdown()

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return bool(self._inner.force_flush(timeout_millis))

        url = f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None
        exporter = Counted(OTLPSpanExporter(endpoint=url, timeout=5))
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                                  sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self._provider, self._tracer, self.ratio = provider, provider.get_tracer("broker"), sample_ratio

    def shutdown(self) -> None:
        """Export what is left (bounded by the exporter's timeout) and stop recording."""
        provider, self._provider, self._tracer, self.ratio = self._provider, None, None, 0.0
        if provider is not None:
            provider.shutdown()


def _span_context(ctx: TraceContext) -> Any:
    from opentelemetry import trace  # noqa: PLC0415

    return trace.SpanContext(int(ctx.trace_id, 16), int(ctx.parent_id, 16), is_remote=True,
                             trace_flags=trace.TraceFlags(0x01 if ctx.sampled else 0x00))


def available() -> bool:
    """OpenTelemetry's SDK and OTLP exporter are installed (``broker[otel]``)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in (
            "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"))
    except ModuleNotFoundError:  # a parent package is missing
        return False


def wanted_by_environment() -> bool:
    """The standard variables ask for OTLP traces (``OTEL_TRACES_EXPORTER=otlp``)."""
    return os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "otlp"


tracing = _Tracing()
