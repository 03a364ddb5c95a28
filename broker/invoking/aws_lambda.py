"""Lambda targets: a real Lambda function (or any Lambda-compatible endpoint, another broker
included) invoked RequestResponse through aiobotocore. botocore errors are translated here."""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from broker.errors import TargetThrottled, TargetUnreachable
from broker.types import InvokeContext, InvokeResult

_THROTTLES = frozenset({"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"})


class LambdaInvoker:
    def __init__(self, client: Any, function_arn: str) -> None:
        self._client = client
        self._arn = function_arn

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        started = time.monotonic()
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
        return InvokeResult(body, response.get("FunctionError"), time.monotonic() - started,
                            int(response.get("StatusCode", 200)))
