"""Lambda's REST error responses: ``X-Amzn-ErrorType`` header plus ``{"Type", "message"}`` body."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker import redaction
from broker.errors import BrokerError

Handler = Callable[[web.Request], Awaitable[web.Response]]


def aws_error(status: int, code: str, message: str, *, error_type: str = "User",
              extra: dict[str, str] | None = None, headers: dict[str, str] | None = None
              ) -> web.Response:
    body = {"Type": error_type, "message": redaction.scrub(message), **(extra or {})}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json",
                        headers={"X-Amzn-ErrorType": code, **(headers or {})})


def store_guarded(handler: Handler, store: str) -> Handler:
    """A handler whose state lives in Redis: a BrokerError from it answers 500 ServiceException."""
    async def run(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BrokerError as exc:
            return aws_error(500, "ServiceException", f"The {store} is unavailable: {exc}", error_type="Service")
    return run
