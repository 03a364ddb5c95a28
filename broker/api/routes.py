"""A route says, where it is registered, which IAM action it needs (``needs``) or that it is open
(``open_route``); the SigV4 middleware authorizes by that declaration and refuses a route that made
none, so a route cannot skip authorization by being left out of a table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ACTION = "iam_action"
_OPEN = "iam_open"


def needs(action: str, handler: Handler) -> Handler:
    """``handler``, authorized for IAM ``action`` (Lambda's action name) on the resource in its path."""
    async def run(request: web.Request) -> web.StreamResponse:
        return await handler(request)
    setattr(run, _ACTION, action)
    return run


def open_route(handler: Handler) -> Handler:
    """``handler``, served without authentication (health and metrics)."""
    async def run(request: web.Request) -> web.StreamResponse:
        return await handler(request)
    setattr(run, _OPEN, True)
    return run


def action_of(handler: object) -> str | None:
    value = getattr(handler, _ACTION, None)
    return value if isinstance(value, str) else None


def is_open(handler: object) -> bool:
    return getattr(handler, _OPEN, False) is True


def template(request: web.Request) -> str:
    """The route template (``/2015-03-31/functions/{name}/invocations``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unknown route)"
