"""Lambda targets: a real Lambda function (or any Lambda-compatible endpoint, another broker
included) invoked RequestResponse through aiobotocore, with the invocation's ``X-Amzn-Trace-Id``
(added to the signed request by a botocore event hook, as the SDK's X-Ray integration does).
botocore errors are translated here."""

from __future__ import annotations

import contextvars
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from broker.errors import TargetThrottled, TargetUnreachable
from broker.types import InvokeContext, InvokeResult

_THROTTLES = frozenset({"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"})
_TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("broker_lambda_trace", default="")


def _add_trace_header(request: Any, **_: Any) -> None:
    trace = _TRACE.get()
    if trace:
        request.headers["X-Amzn-Trace-Id"] = trace


class LambdaInvoker:
    def __init__(self, client: Any, function_arn: str) -> None:
        self._client = client
        self._arn = function_arn
        client.meta.events.register("before-sign.lambda.Invoke", _add_trace_header, unique_id="broker-trace-header")

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        started = time.monotonic()
        token = _TRACE.set(ctx.trace_id)
        try:
            response = await self._client.invoke(FunctionName=self._arn, InvocationType="RequestResponse",
                                                 Payload=payload)
            async with response["Payload"] as stream:
                body = await stream.read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _THROTTLES:
                reason = exc.response.get("Reason") or exc.response.get("reason") or code
                raise TargetThrottled(f"{self._arn}: {code}: {message}", reason=str(reason)) from exc
            raise TargetUnreachable(f"{self._arn}: {code}: {message}") from exc
        except (BotoCoreError, OSError) as exc:
            raise TargetUnreachable(f"{self._arn}: {type(exc).__name__}: {exc}") from exc
        finally:
            _TRACE.reset(token)
        return InvokeResult(body, response.get("FunctionError"), time.monotonic() - started,
                            int(response.get("StatusCode", 200)))
