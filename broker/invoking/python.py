"""Python targets: ``module:function(event, context)``, sync or async (README.md, "functions:").

Exceptions are function errors with Lambda's Python error object. A sync handler runs in a
worker thread; past ``Timeout`` it is reported as timed out (the thread cannot be killed and
finishes in the background, so keep sync handlers short or make them async).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.errors import StartupError
from broker.invoking.function import timeout_error_payload
from broker.types import InvokeContext, InvokeResult


class LambdaContext:
    """The subset of Lambda's Python context object a handler can rely on."""

    def __init__(self, ctx: InvokeContext) -> None:
        self.aws_request_id = ctx.request_id
        self.function_name = ctx.function_name
        self.invoked_function_arn = ctx.function_arn
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 128
        self.client_context = ctx.client_context
        self._deadline_ms = ctx.deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def load_handler(spec: str) -> Callable[..., Any]:
    """Import ``module:attr``; StartupError names what is missing."""
    module_name, _, attr = spec.partition(":")
    here = str(Path.cwd())
    if here not in sys.path:  # as for execution environments and `broker validate`: the working directory
        sys.path.insert(0, here)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StartupError(f"cannot load Handler {spec!r}: {exc}") from exc
    if not callable(obj):
        raise StartupError(f"Handler {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _error_payload(exc: BaseException, request_id: str) -> bytes:
    return json.dumps({
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }).encode()


class PythonInvoker:
    def __init__(self, handler: Callable[..., Any]) -> None:
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        event = json.loads(payload)
        context = LambdaContext(ctx)
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit_seconds):
                if self._is_async:
                    result = await self._handler(event, context)
                else:
                    call = functools.partial(self._handler, event, context)
                    result = await asyncio.get_running_loop().run_in_executor(None, call)
        except TimeoutError:
            return InvokeResult(timeout_error_payload(ctx.request_id, limit_seconds), "Unhandled",
                                time.monotonic() - started)
        except Exception as exc:
            return InvokeResult(_error_payload(exc, ctx.request_id), "Unhandled",
                                time.monotonic() - started)
        duration = time.monotonic() - started
        try:
            body = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            err = json.dumps({"errorMessage": f"Unable to marshal response: {exc}",
                              "errorType": "Runtime.MarshalError", "requestId": ctx.request_id})
            return InvokeResult(err.encode(), "Unhandled", duration)
        return InvokeResult(body, None, duration)
