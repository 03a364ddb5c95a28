"""Spans, through OpenTelemetry's SDK (the one boundary with it; an optional extra,
``pip install 'broker[otel]'``): a span per batch or async event (receive → process, the messaging
semantic conventions), a child span per invocation attempt, spans for async enqueues and
destination deliveries. Exported over OTLP/HTTP (``otlp``) by the SDK's batch processor, on its
own thread off the event loop; a collector that cannot be reached drops spans (counted in
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

from broker.tracing import otlp
from broker.tracing.context import TraceContext

_KINDS = ("internal", "client", "producer", "consumer")


class Span:
    """A span as the code sees it: the context its children continue from, and what to note."""

    __slots__ = ("_span", "context")

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


class _Off(contextlib.AbstractContextManager[Span]):
    """Tracing off: the span is only its context (no generator, nothing recorded)."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(self, *_: object) -> None:
        return None


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

    def span(self, name: str, *, parent: TraceContext | None, kind: str = "internal",
             links: Sequence[TraceContext] = (), now: float = 0.0,
             **attributes: Any) -> contextlib.AbstractContextManager[Span]:
        """A span (``parent``: the context it continues; None: a new trace). Off, only the context."""
        if self._tracer is None:
            return _Off(Span(parent.child() if parent is not None else self.new_trace(now)))
        return self._recorded(name, parent, kind, links, attributes)

    @contextlib.contextmanager
    def _recorded(self, name: str, parent: TraceContext | None, kind: str, links: Sequence[TraceContext],
                  attributes: dict[str, Any]) -> Iterator[Span]:
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
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: PLC0415
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

        url, headers = otlp.traces_url(endpoint), otlp.headers_from_environment()

        class Exporter(SpanExporter):
            """OTLP/HTTP (``tracing/otlp.py``), counting the spans it could not deliver."""

            def export(self, batch: Sequence[Any]) -> Any:
                try:
                    delivered = otlp.post(url, otlp.encode(batch), headers, timeout=5.0)
                except Exception:  # whatever the export meets, processing goes on
                    delivered = False
                if not delivered:
                    dropped.inc(len(batch))
                    return SpanExportResult.FAILURE
                return SpanExportResult.SUCCESS

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                                  sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
        provider.add_span_processor(BatchSpanProcessor(Exporter(), schedule_delay_millis=1000))
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
    """OpenTelemetry's SDK is installed (``broker[otel]``)."""
    try:
        return importlib.util.find_spec("opentelemetry.sdk.trace") is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def wanted_by_environment() -> bool:
    """The standard variables ask for OTLP traces (``OTEL_TRACES_EXPORTER=otlp``)."""
    return os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "otlp"


tracing = _Tracing()
