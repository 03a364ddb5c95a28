"""``/healthz`` (alive: cheap), ``/readyz`` (honest: Redis and AWS reachable, not draining),
``/metrics`` (Prometheus text)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from broker.api.routes import open_route

ReadinessCheck = Callable[[], Awaitable[list[str]]]


def routes(registry: CollectorRegistry, readiness: ReadinessCheck,
           before_scrape: Callable[[], Awaitable[None]] | None = None) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        problems = await readiness()
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/healthz", open_route(healthz)), web.get("/readyz", open_route(readyz)),
            web.get("/metrics", open_route(metrics))]
