"""The broker's status route, beside Lambda's on the same port and authenticated the same way:

    GET /broker/v1/status[?History=true]     broker:DescribeStatus

One JSON document for the whole deployment (``status.document``): replicas, mappings with their
shards or pollers, functions with their concurrency, async queue and environments. With
``History=true`` each mapping also carries 15 minutes of 10-second points for charts.
"""

from __future__ import annotations

from aiohttp import web

from broker.api.errors import store_guarded
from broker.api.routes import needs
from broker.status.document import StatusDocument


def routes(document: StatusDocument) -> list[web.RouteDef]:
    async def status(request: web.Request) -> web.Response:
        history = request.query.get("History", "false").lower() in ("true", "1")
        return web.json_response(await document.build(history=history))

    return [web.get("/broker/v1/status", needs("broker:DescribeStatus", store_guarded(status, store="status")))]
