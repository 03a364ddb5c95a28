"""The Invoker seam and ``Function``, which invokes a target and accounts for it once.

An invoker returns an ``InvokeResult`` when the function ran (successfully or with a function
error) and raises ``InvokeError`` (``TargetThrottled``/``TargetUnreachable``) when it did not.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Protocol

from broker.clock import Clock
from broker.concurrency.permits import UNCONTENDED, Grant, PermitLost, Permits
from broker.errors import TargetThrottled, TargetUnreachable
from broker.observability.metrics import Metrics
from broker.tracing.context import TraceContext
from broker.tracing.spans import Span, tracing
from broker.types import InvokeContext, InvokeResult

# Work with records or an event in hand waits this long in line for a permit (first come, first
# served across replicas) before the wait counts as a throttle and the caller backs off.
PERMIT_WAIT_SECONDS = 5.0


class Invoker(Protocol):
    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        """Run the target once with ``payload`` (JSON bytes); ``limit_seconds`` is the function's Timeout."""


def timeout_error_payload(request_id: str, timeout: float) -> bytes:
    """Lambda's body for a function that ran past its timeout (docs/aws-semantics.md, "Invoke")."""
    return (
        b'{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: '
        + request_id.encode()
        + f' Error: Task timed out after {timeout:.2f} seconds"}}'.encode()
    )


class Function:
    """A configured function: name, ARN, timeout and its target's invoker."""

    def __init__(self, *, name: str, arn: str, timeout: float, invoker: Invoker,
                 metrics: Metrics, clock: Clock, permits: Permits | None = None) -> None:
        self.name = name
        self._permits = permits
        self.arn = arn
        self.timeout = timeout
        self._invoker = invoker
        self._metrics = metrics
        self._clock = clock
        # The children of this function's metrics, looked up once (a labels() call costs µs per invoke).
        self._m_in_flight = metrics.concurrent_executions.labels(name)
        self._m_invocations = metrics.invocations.labels(name)
        self._m_duration = metrics.duration.labels(name)
        self._m_errors = metrics.errors.labels(name)
        self._m_system_errors = metrics.system_errors.labels(name)

    def new_trace(self) -> TraceContext:
        """A trace for an invocation nothing traced triggered (stream records, a replay), sampled
        by the tracing's ratio."""
        return tracing.new_trace(self._clock.time())

    def permit(self, wait_seconds: float = 0.0) -> contextlib.AbstractAsyncContextManager[Grant]:
        """Hold one of the function's concurrency permits, waiting in line for up to
        ``wait_seconds`` (TargetThrottled when none is free in time)."""
        if self._permits is None:
            return contextlib.nullcontext(UNCONTENDED)
        return self._permits.hold(self.name, wait_seconds=wait_seconds)

    async def invoke(self, payload: bytes, *, request_id: str | None = None, acquire: bool = True,
                     wait_seconds: float = 0.0, trace: TraceContext | None = None, retry: int = 0) -> InvokeResult:
        """Invoke once, under a concurrency permit unless the caller holds one (``acquire=False``);
        work with records or an event in hand may wait ``wait_seconds`` in line for it. ``trace``:
        what triggered it (else a new trace); the attempt is a span of it (``retry``: how many came
        before), passed on to the target.
        Metrics: invocations/errors/duration when it ran, throttles (by reason) when refused."""
        request_id = request_id or str(uuid.uuid4())
        with tracing.span(f"invoke {self.name}", parent=trace, kind="client",
                          now=self._clock.time(), faas__invoked_name=self.name, faas__invoked_provider="aws",
                          faas__invocation_id=request_id, broker__retry=retry) as span:
            return await self._attempt(payload, request_id, acquire, wait_seconds, span)

    async def _attempt(self, payload: bytes, request_id: str, acquire: bool, wait_seconds: float,
                       span: Span) -> InvokeResult:
        attempt = span.context
        ctx = InvokeContext(
            request_id=request_id,
            function_name=self.name,
            function_arn=self.arn,
            deadline_ms=int((self._clock.time() + self.timeout) * 1000),
            trace_id=attempt.xray,
            traceparent=attempt.traceparent,
        )
        in_flight = self._m_in_flight
        try:
            async with self.permit(wait_seconds) if acquire else contextlib.nullcontext():
                in_flight.inc()
                try:
                    result = await self._invoker.invoke(payload, ctx, self.timeout)
                finally:
                    in_flight.dec()
        except TargetThrottled as exc:
            self._metrics.throttles.labels(self.name, exc.reason or "TargetThrottled").inc()
            span.event("throttled", reason=exc.reason or "TargetThrottled")
            span.set(broker__outcome="throttled")
            raise
        except (TargetUnreachable, PermitLost):
            self._m_system_errors.inc()
            span.set(broker__outcome="unreachable")
            raise
        self._m_invocations.inc()
        self._m_duration.observe(result.duration_seconds)
        if not result.ok:
            self._m_errors.inc()
            span.failed(result.function_error or "Unhandled")
        span.set(broker__outcome="success" if result.ok else "function_error", faas__error=result.function_error)
        return result
