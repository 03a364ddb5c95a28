"""Spans: one per batch or async event (receive → process, OpenTelemetry's messaging semantic
conventions), a child per invocation attempt, one per async enqueue and per destination delivery;
exported over OTLP/HTTP (``otlp``) in batches from a thread of their own, so the event loop only
records them. A collector that cannot be reached drops spans (counted in
``broker_trace_spans_dropped_total``) and never slows or stops processing; a full queue drops the
newest span the same way.

Hand-written, not OpenTelemetry's SDK (docs/design.md, "Decisions"): the SDK took about 48 µs of
CPU to make, end and hand on one span here, and an async event has three; this takes about 1 µs.
What goes over the wire is OTLP, and the standard variables apply (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``..._HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``). Sampling is OpenTelemetry's ParentBased(TraceIdRatioBased): a
caller's sampled flag wins, a new trace is sampled with ``sample_ratio``.

Off (the default) a span only carries the trace context on. Like OpenTelemetry's tracer provider,
the tracing is one per process (``configure`` at start, ``shutdown`` at the end), so every part
reaches it without being handed it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from broker import __version__
from broker.tracing import otlp
from broker.tracing.context import TraceContext
from broker.tracing.otlp import Recorded

KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}  # OTLP's SpanKind
QUEUE_LIMIT = 8192  # spans waiting for export; beyond it the newest are dropped (counted)
BATCH = 512
EXPORT_SECONDS = 1.0


def _attributes(given: dict[str, Any]) -> dict[str, Any]:
    """``faas__invoked_name=...`` keyword arguments as ``faas.invoked_name`` (None left out)."""
    return {k.replace("__", "."): v for k, v in given.items() if v is not None}


class Span:
    """A span as the code sees it: the context its children continue from, and what to note."""

    __slots__ = ("_recorded", "context")

    def __init__(self, context: TraceContext, recorded: Recorded | None = None) -> None:
        self.context = context
        self._recorded = recorded

    def set(self, **attributes: Any) -> None:
        if self._recorded is not None:
            self._recorded.attributes.update(_attributes(attributes))

    def event(self, name: str, **attributes: Any) -> None:
        if self._recorded is not None:
            self._recorded.events.append((name, time.time_ns(), _attributes(attributes)))

    def failed(self, description: str) -> None:
        if self._recorded is not None:
            self._recorded.status = (2, description)


class _Off(contextlib.AbstractContextManager[Span]):
    """A span that is not recorded (tracing off, or not sampled): only its context."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(self, *_: object) -> None:
        return None


class _On(contextlib.AbstractContextManager[Span]):
    __slots__ = ("_recorded", "_span", "_tracing")

    def __init__(self, tracing: _Tracing, recorded: Recorded, context: TraceContext) -> None:
        self._tracing = tracing
        self._recorded = recorded
        self._span = Span(context, recorded)

    def __enter__(self) -> Span:
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        recorded = self._recorded
        if exc is not None:
            recorded.status = (2, f"{kind.__name__ if kind else 'Error'}: {exc}")
            recorded.events.append(("exception", time.time_ns(), {
                "exception.type": kind.__name__ if kind else "", "exception.message": str(exc)}))
        recorded.end = time.time_ns()
        self._tracing.finished(recorded)


class _Tracing:
    def __init__(self) -> None:
        self.on = False
        self.ratio = 0.0  # new traces: sampled with this probability (off: never)
        self._queue: collections.deque[Recorded] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped: Any = None
        self._resource: dict[str, Any] = {}
        self._url = ""
        self._headers: dict[str, str] = {}

    def new_trace(self, now: float) -> TraceContext:
        return TraceContext.new(sampled=self.on and random.random() < self.ratio, now=now)

    def span(self, name: str, *, parent: TraceContext | None, kind: str = "internal",
             links: Sequence[TraceContext] = (), now: float = 0.0,
             **attributes: Any) -> contextlib.AbstractContextManager[Span]:
        """A span (``parent``: the context it continues; None: a new trace). Not sampled, or off,
        it is only the context its children continue from."""
        context = parent.child() if parent is not None else self.new_trace(now)
        if not (self.on and context.sampled):
            return _Off(Span(context))
        recorded = Recorded(name, kind=KINDS[kind], trace_id=context.trace_id, span_id=context.parent_id,
                            parent_id=parent.parent_id if parent is not None else None, links=links,
                            attributes=_attributes(attributes))
        return _On(self, recorded, context)

    def finished(self, recorded: Recorded) -> None:
        if len(self._queue) >= QUEUE_LIMIT:
            self._dropped.inc()
            return
        self._queue.append(recorded)
        if len(self._queue) >= BATCH:
            self._wake.set()

    def configure(self, *, endpoint: str | None, sample_ratio: float, service_name: str, dropped: Any) -> None:
        """Spans from now on, exported to ``endpoint`` (OTLP/HTTP; None: the OTEL_* variables)."""
        self._url, self._headers, self._dropped = otlp.traces_url(endpoint), otlp.headers_from_environment(), dropped
        self._resource = {**otlp.resource_from_environment(),
                          "service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name,
                          "telemetry.sdk.name": "broker", "telemetry.sdk.language": "python",
                          "telemetry.sdk.version": __version__}
        self.ratio, self.on = sample_ratio, True
        self._stopping.clear()
        self._thread = threading.Thread(target=self._export_loop, name="broker-span-export", daemon=True)
        self._thread.start()

    def _export_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(EXPORT_SECONDS)
            self._wake.clear()
            self._export_all()
        self._export_all()

    def _export_all(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                delivered = otlp.post(self._url, otlp.encode(batch, self._resource, ("broker", __version__)),
                                      self._headers, timeout=5.0)
            except Exception:  # whatever the export meets, processing goes on
                delivered = False
            if not delivered:
                self._dropped.inc(len(batch))

    def shutdown(self) -> None:
        """Export what is left (each batch bounded by the export's timeout) and stop recording."""
        self.on, self.ratio = False, 0.0
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout=15)


def wanted_by_environment() -> bool:
    """The standard variables ask for OTLP traces (``OTEL_TRACES_EXPORTER=otlp``)."""
    return os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "otlp"


tracing = _Tracing()
