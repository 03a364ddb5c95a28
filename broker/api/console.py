"""The web console's routes: the page and its assets (package data, ``broker/console/static``), and
the sign-in that turns an access key of ``api.credentials`` into a session (``api/sessions.py``).
What the console shows and does goes through the API's own routes and their permissions.

    GET  /console/                 the page
    GET  /console/assets/{name}    its script and style sheet
    GET  /console/session          {"Auth": "none"}, or the signed-in key: AccessKeyId, Csrf, Actions; 401
    POST /console/login            {"AccessKeyId", "SecretAccessKey"} -> the session cookie (403 if wrong)
    POST /console/logout           the cookie is cleared
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from broker.api.auth import SigV4
from broker.api.errors import aws_error, json_object
from broker.api.routes import open_route
from broker.api.sessions import COOKIE, set_cookie
from broker.observability.metrics import Metrics

_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'"}


def _static(name: str) -> bytes:
    return resources.files("broker.console").joinpath("static", name).read_bytes()


def routes(auth: SigV4 | None, metrics: Metrics) -> list[web.RouteDef]:
    console = _Console(auth, metrics)
    return [web.get("/console", open_route(console.moved)), web.get("/console/", open_route(console.index)),
            web.get("/console/assets/{name}", open_route(console.asset)),
            web.get("/console/session", open_route(console.session)),
            web.post("/console/login", open_route(console.login)),
            web.post("/console/logout", open_route(console.logout))]


def _signed_in(key_id: str, csrf: str, actions: tuple[str, ...], resources: tuple[str, ...]) -> web.Response:
    return web.json_response({"AccessKeyId": key_id, "Csrf": csrf, "Actions": list(actions),
                              "Resources": list(resources)})


class _Console:
    def __init__(self, auth: SigV4 | None, metrics: Metrics) -> None:
        self._auth = auth
        self._metrics = metrics
        self._page = _static("index.html")
        self._assets = {name: _static(name) for name in _TYPES}

    async def index(self, _: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8", headers=_HEADERS)

    async def moved(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._assets:
            return aws_error(404, "ResourceNotFoundException", f"No console asset {name}")
        return web.Response(body=self._assets[name], content_type=_TYPES[name], charset="utf-8", headers=_HEADERS)

    async def session(self, request: web.Request) -> web.Response:
        if self._auth is None:
            return web.json_response({"Auth": "none"})
        found = self._auth.sessions.key_of(request.cookies.get(COOKIE, ""))
        if found is None:
            return aws_error(401, "UnauthorizedException", "Sign in with an access key of the broker's api.credentials")
        key, csrf = found
        return _signed_in(key.access_key_id, csrf, key.actions, key.resources)

    async def login(self, request: web.Request) -> web.Response:
        if self._auth is None:
            return web.json_response({"Auth": "none"})
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        key_id, secret = body.get("AccessKeyId"), body.get("SecretAccessKey")
        signed = (self._auth.sessions.sign_in(key_id, secret)
                  if isinstance(key_id, str) and isinstance(secret, str) else None)
        if signed is None:
            self._metrics.auth_failures.labels("sign_in").inc()
            return aws_error(403, "UnrecognizedClientException", "The access key id or the secret is not right.")
        key, cookie, csrf = signed
        response = _signed_in(key.access_key_id, csrf, key.actions, key.resources)
        set_cookie(response, request, cookie)
        return response

    async def logout(self, _: web.Request) -> web.Response:
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/")
        return response
