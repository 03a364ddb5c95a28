"""The HTTP API's aiohttp plumbing: the middlewares every route runs behind (Lambda's error shape,
and SigV4 when the config asks for it, said once at start) and listening on the configured port
with a one-line error when it is taken."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from broker.api.auth import Key, SigV4
from broker.api.errors import lambda_errors
from broker.clock import Clock
from broker.config.models import ApiSettings
from broker.errors import StartupError
from broker.observability.metrics import Metrics

log = structlog.get_logger("broker.app")


def keys(api: ApiSettings) -> list[Key]:
    """The SigV4 keys the config gives (secret files already read)."""
    return [Key(c.AccessKeyId, c.SecretAccessKey or "", tuple(c.Actions), tuple(c.Resources)) for c in api.credentials]


def authenticator(api: ApiSettings, *, region: str, account: str, clock: Clock, metrics: Metrics) -> SigV4 | None:
    """SigV4 unless the config chose otherwise (said once at start); its keys can be replaced live."""
    if api.authenticated:
        given = keys(api)
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


async def listen(app: web.Application, api: ApiSettings) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on the API's host and port; the runner and the port it got (port 0 picks one)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, api.host, api.port, backlog=1024)  # bursts of new connections wait, not reset
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"broker.api.port: cannot listen on {api.host}:{api.port} ({exc.strerror or exc}); "
                           "is another broker running? Set broker.api.port (or BROKER_API_PORT) to a free port"
                           ) from exc
    sockets = getattr(site._server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else api.port
