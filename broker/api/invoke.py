"""Lambda's Invoke (docs/aws-semantics.md, "Invoke"): ``POST /2015-03-31/functions/{FunctionName}/invocations``.

RequestResponse runs the target and answers 200 with its result (and ``X-Amz-Function-Error`` on a
function error); Event answers 202 once the event is in Redis; DryRun answers 204. Errors use
Lambda's codes and ``{"Type", "message"}`` bodies, so the AWS SDKs' Lambda client works unchanged.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from broker.api.bodies import BodyError, parse_json
from broker.api.errors import aws_error
from broker.api.routes import needs
from broker.arns import function_arn, resolve_name
from broker.async_invoke.invoke_config import InvokeConfigStore
from broker.async_invoke.queue import AsyncQueue
from broker.batching.envelope import MAX_PAYLOAD_BYTES
from broker.concurrency.permits import ACCOUNT_REASON, RESERVED_REASON
from broker.errors import BrokerError, TargetThrottled, TargetUnreachable
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.tracing.context import TraceContext
from broker.tracing.spans import tracing

SYNC_LIMIT = MAX_PAYLOAD_BYTES
ASYNC_LIMIT = 1024 * 1024
_TYPES = ("RequestResponse", "Event", "DryRun")
_REASONS = frozenset({RESERVED_REASON, ACCOUNT_REASON})


class Invokable(Protocol):
    """A function as Invoke sees it: the function, its async queue, its event-invoke-config."""

    @property
    def function(self) -> Function: ...

    @property
    def queue(self) -> AsyncQueue: ...

    @property
    def invoke_config(self) -> InvokeConfigStore: ...


def _parse(request_kind: str, body: bytes) -> str | web.Response:
    """The event JSON text, or Lambda's error response for a bad request."""
    if request_kind not in _TYPES:
        return aws_error(400, "InvalidParameterValueException",
                         f"1 validation error detected: Value '{request_kind}' at 'invocationType' failed to "
                         f"satisfy constraint: Member must satisfy enum value set: [{', '.join(_TYPES)}]")
    limit = ASYNC_LIMIT if request_kind == "Event" else SYNC_LIMIT
    if len(body) > limit:
        return aws_error(413, "RequestTooLargeException",
                         f"Request must be smaller than {limit} bytes for the InvokeFunction operation")
    if not body.strip():
        return "{}"
    try:
        parse_json(body)
    except BodyError as exc:
        return aws_error(400, "InvalidRequestContentException",
                         f"Could not parse request body into json: Could not parse payload into json: {exc}")
    return body.decode("utf-8")


async def _run_sync(target: Invokable, text: str, request_id: str, log_type: str | None,
                    trace: TraceContext | None) -> web.Response:
    try:
        result = await target.function.invoke(text.encode(), request_id=request_id, trace=trace)
    except TargetThrottled as exc:  # a full permit pool names its Reason; a target's own 429 is the account's
        reason = exc.reason if exc.reason in _REASONS else "ConcurrentInvocationLimitExceeded"
        return _throttled(reason, exc.retry_after)
    except TargetUnreachable as exc:
        return aws_error(502, "ServiceException", f"The function's target could not be reached: {exc}",
                         error_type="Service")
    except BrokerError as exc:  # Redis (the permits) away: retryable, and SDKs retry a 503
        return aws_error(503, "ServiceException", f"The function could not be invoked now: {exc}",
                         error_type="Service")
    headers = {"X-Amz-Executed-Version": "$LATEST", "X-Amzn-RequestId": request_id}
    if result.function_error:
        headers["X-Amz-Function-Error"] = result.function_error
    if log_type == "Tail":
        # the last 4 KB of the invocation's log (execution environments keep one; other targets none)
        headers["X-Amz-Log-Result"] = base64.b64encode(result.log.encode()[-4096:]).decode()
    return web.Response(status=200, body=result.payload, headers=headers, content_type="application/json")


def routes(functions: Mapping[str, Invokable], metrics: Metrics, *, region: str, account: str) -> list[web.RouteDef]:
    received: dict[str, Any] = {}  # each function's counter child, looked up once

    async def invoke(request: web.Request) -> web.StreamResponse:
        name, qualifier = resolve_name(request.match_info["name"], account)
        qualifier = request.query.get("Qualifier", qualifier)
        target = functions.get(name)
        if target is None or qualifier not in (None, "$LATEST"):
            arn = function_arn(region, account, name, qualifier)
            return aws_error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        text = _parse(kind, await request.read())
        if isinstance(text, web.Response):
            return text
        if kind == "DryRun":
            return web.Response(status=204)
        request_id = str(uuid.uuid4())
        # the caller's trace, if it sent one: W3C's traceparent, else X-Ray's header
        trace = TraceContext.from_headers(request.headers.get("traceparent"), request.headers.get("X-Amzn-Trace-Id"))
        if kind == "RequestResponse":
            return await _run_sync(target, text, request_id, request.headers.get("X-Amz-Log-Type"), trace)
        try:
            with tracing.span(f"{name} enqueue", parent=trace, kind="producer", messaging__system="broker",
                              messaging__operation="publish", messaging__destination__name=name,
                              messaging__message__id=request_id) as span:
                # the event goes on in the caller's trace (or one of its own, sampled by the ratio)
                await target.queue.enqueue(request_id, text, span.context.xray if trace or tracing.on else "")
        except BrokerError as exc:
            # Redis away or full (noeviction): nothing was accepted, and SDKs retry a 503
            return aws_error(503, "ServiceException", f"The event could not be queued: {exc}", error_type="Service")
        counter = received.get(name)
        if counter is None:
            counter = received[name] = metrics.async_events_received.labels(name)
        counter.inc()
        return web.Response(status=202, headers={"X-Amzn-RequestId": request_id})

    return [web.post("/2015-03-31/functions/{name}/invocations", needs("lambda:InvokeFunction", invoke))]


def _throttled(reason: str, retry_after: float | None) -> web.Response:
    headers = {"Retry-After": str(int(retry_after))} if retry_after else None
    return aws_error(429, "TooManyRequestsException", "Rate Exceeded.", extra={"Reason": reason}, headers=headers)
