"""HTTP targets (README.md, "functions:"). aiohttp errors are translated here and nowhere else.

2xx is success unless ``X-Amz-Function-Error`` is set or the body is a runtime-interface-emulator
error (an object with ``errorType`` and ``errorMessage``, or its plain-text timeout line): then a
function error. 429 and 503 are throttles (``Retry-After`` honoured); any other status is a
function error; connection failures are system errors; running past ``Timeout`` is a function
error with Lambda's ``Sandbox.Timedout`` body.
"""

from __future__ import annotations

import io
import json
import time

import aiohttp

from broker.errors import TargetThrottled, TargetUnreachable
from broker.invoking.function import timeout_error_payload
from broker.types import InvokeContext, InvokeResult

_THROTTLE_STATUSES = frozenset({429, 503})
_RIE_TIMEOUT_PREFIX = b"Task timed out after"
_STREAM_BODY_ABOVE = 512 * 1024


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _is_runtime_error_body(body: bytes) -> bool:
    """A Lambda runtime error object (RIE answers 200 with it and drops the error header)."""
    if body.startswith(_RIE_TIMEOUT_PREFIX):
        return True
    if not body.startswith(b"{") or b"errorType" not in body:
        return False
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and "errorType" in obj and "errorMessage" in obj


def _error_body(status: int, body: bytes) -> bytes:
    """Keep a JSON object body as is; wrap anything else into Lambda's error object shape."""
    if body.startswith(b"{"):
        try:
            if isinstance(json.loads(body), dict):
                return body
        except ValueError:
            pass
    text = body[:1024].decode("utf-8", "replace") or f"HTTP {status}"
    return json.dumps({"errorType": f"Function.HttpStatus{status}", "errorMessage": text}).encode()


class HttpInvoker:
    """POST the event to ``url`` with Lambda's runtime headers."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self._url = url
        self._session = session
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}  # by the function's Timeout

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": ctx.request_id,
            "Lambda-Runtime-Deadline-Ms": str(ctx.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": ctx.function_arn,
        }
        if ctx.trace_id:
            headers["Lambda-Runtime-Trace-Id"] = ctx.trace_id
            headers["X-Amzn-Trace-Id"] = ctx.trace_id
        if ctx.traceparent:
            headers["traceparent"] = ctx.traceparent
        if ctx.client_context:
            headers["Lambda-Runtime-Client-Context"] = ctx.client_context
        timeout = self._timeouts.get(limit_seconds)
        if timeout is None:  # aiohttp's own timer (the whole request, reading the answer too): cheaper than a wrapper
            timeout = self._timeouts[limit_seconds] = aiohttp.ClientTimeout(total=limit_seconds)
        # aiohttp wants large bodies as a stream (it warns that raw bytes block the loop)
        body_arg = io.BytesIO(payload) if len(payload) > _STREAM_BODY_ABOVE else payload
        started = time.monotonic()
        try:
            async with self._session.post(self._url, data=body_arg, headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                status = resp.status
                function_error = resp.headers.get("X-Amz-Function-Error")
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            return InvokeResult(timeout_error_payload(ctx.request_id, limit_seconds), "Unhandled",
                                time.monotonic() - started, 0)
        except aiohttp.ClientError as exc:
            raise TargetUnreachable(f"{self._url}: {exc.__class__.__name__}: {exc}") from exc
        duration = time.monotonic() - started
        if status in _THROTTLE_STATUSES:
            raise TargetThrottled(f"{self._url} answered {status}",
                                  retry_after=_retry_after(retry_after), reason=f"HTTP{status}")
        if 200 <= status < 300:
            if function_error:
                return InvokeResult(body, function_error, duration, status)
            if _is_runtime_error_body(body):
                return InvokeResult(body, "Unhandled", duration, status)
            return InvokeResult(body, None, duration, status)
        return InvokeResult(_error_body(status, body), function_error or "Unhandled", duration, status)
