"""The HTTP API's aiohttp plumbing: the middlewares every route runs behind (Lambda's error shape,
and SigV4 when the config asks for it, said once at start) and listening on the configured port
with a one-line error when it is taken."""

from __future__ import annotations

import socket
from typing import Any

import structlog
from aiohttp import web

from broker.api.auth import SigV4
from broker.api.errors import aws_error, lambda_errors
from broker.api.keys import keys_of
from broker.clock import Clock
from broker.config.models import ApiSettings
from broker.errors import StartupError
from broker.observability.metrics import Metrics

log = structlog.get_logger("broker.app")


def authenticator(api: ApiSettings, *, region: str, account: str, clock: Clock, metrics: Metrics) -> SigV4 | None:
    """SigV4 unless the config chose otherwise (said once at start); its keys can be replaced live."""
    if api.authenticated:
        given = keys_of(api)
        log.info("api_authentication", mode="sigv4", access_key_ids=[k.access_key_id for k in given])
        return SigV4(given, region=region, account=account, clock=clock, metrics=metrics)
    if api.loopback:
        log.info("api_unauthenticated", host=api.host,
                 note="no credentials configured: only processes on this machine can reach the API")
    else:
        log.warning("api_unauthenticated_network", host=api.host,
                    note="auth: none with allow_unauthenticated_network: anyone who reaches the port may "
                         "invoke functions, change concurrency and pause mappings")
    return None


def middlewares(auth: SigV4 | None) -> list[Any]:
    """Lambda's errors on every route, then SigV4 where the config asks for it."""
    return [lambda_errors] if auth is None else [lambda_errors, auth.middleware]


def bind(api: ApiSettings) -> socket.socket:
    """The API's listening socket, bound at once so a taken port ends start-up in one line; port 0
    picks one."""
    sock = socket.socket(socket.AF_INET6 if ":" in api.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((api.host, api.port))
        sock.listen(1024)  # bursts of new connections wait, not reset
    except OSError as exc:
        sock.close()
        raise StartupError(f"broker.api.port: cannot listen on {api.host}:{api.port} ({exc.strerror or exc}); "
                           "is another broker running? Set broker.api.port (or BROKER_API_PORT) to a free port"
                           ) from exc
    sock.setblocking(False)
    return sock


async def listen(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """Serve ``app`` on the bound socket."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


async def hold(sock: socket.socket, waiting_for: str) -> web.AppRunner:
    """While start-up waits for something before the API can be built (the account id from STS):
    ``/healthz`` answers (the process is alive), ``/readyz`` says what it waits for, and every other
    route answers 503 ServiceException. Served on a duplicate of the socket, so stopping it leaves
    the socket itself listening for the API."""
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "not ready", "problems": [f"starting: {waiting_for}"]}, status=503)

    async def other(_: web.Request) -> web.Response:
        return aws_error(503, "ServiceException", f"The broker is starting ({waiting_for})", error_type="Service")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.route("*", "/{tail:.*}", other)])
    return await listen(app, sock.dup())
