"""Lambda's REST error responses: ``X-Amzn-ErrorType`` header plus ``{"Type", "message"}`` body."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from broker import redaction
from broker.api.bodies import parse_json
from broker.api.routes import template
from broker.errors import BrokerError

Handler = Callable[[web.Request], Awaitable[web.Response]]
log = structlog.get_logger("broker.api")


def aws_error(status: int, code: str, message: str, *, error_type: str = "User",
              extra: dict[str, str] | None = None, headers: dict[str, str] | None = None
              ) -> web.Response:
    body = {"Type": error_type, "message": redaction.scrub(message), **(extra or {})}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json",
                        headers={"X-Amzn-ErrorType": code, **(headers or {})})


def mapping_not_found(uuid: str) -> web.Response:
    """Lambda's answer for an event source mapping that does not exist."""
    return aws_error(404, "ResourceNotFoundException", "The resource you requested does not exist. "
                     f"(Service: Lambda, Status Code: 404, Request ID: -) UUID: {uuid}")


def store_unavailable(store: str, exc: BrokerError) -> web.Response:
    """The answer while Redis cannot be read or written: 503 ServiceException, on every route."""
    return aws_error(503, "ServiceException", f"The {store} is unavailable: {exc}", error_type="Service")


def store_guarded(handler: Handler, store: str) -> Handler:
    """A handler whose state lives in Redis: a BrokerError from it answers 503 ServiceException."""
    async def run(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BrokerError as exc:
            return store_unavailable(store, exc)
    return run


@web.middleware
async def lambda_errors(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every answer is Lambda's shape, aiohttp's own refusals included: unknown routes and methods,
    bodies over the limit, and anything a handler did not expect (500, logged)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status in (404, 405):
            return aws_error(exc.status, "UnknownOperationException",
                             f"Unknown operation: {request.method} {request.path}{_unserved_hint(request.path)}")
        if exc.status == 413:
            return aws_error(413, "RequestTooLargeException",
                             f"Request must be smaller than {request.app._client_max_size} bytes")
        return aws_error(exc.status, "InvalidRequestContentException", exc.reason or "Bad request")
    except Exception as exc:  # a bug: never aiohttp's plain-text 500
        log.exception("api_unexpected_error", method=request.method, route=template(request))
        return aws_error(500, "ServiceException", f"An internal error occurred: {type(exc).__name__}",
                         error_type="Service")


def _unserved_hint(path: str) -> str:
    """Function management (create, update, delete, versions, aliases, code, URLs) is not served:
    say where functions come from instead."""
    if "/functions" in path.split("?", 1)[0]:
        return (". This broker serves Lambda's Invoke, event source mapping, concurrency, event invoke "
                "config, tag and function read operations; functions are declared in the config file "
                "(functions:) and change when it does")
    return ""


async def json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's body as a JSON object (an empty body is ``{}``), or Lambda's 400 for it."""
    try:
        body = parse_json(await request.read() or b"{}")
    except ValueError as exc:
        return aws_error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
    if not isinstance(body, dict):
        return aws_error(400, "InvalidRequestContentException", "The request body must be a JSON object")
    return body
