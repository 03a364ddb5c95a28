"""An HTTP target that answers at once (``{}``), counting what it received. Run: python benchmarks/target.py PORT"""

from __future__ import annotations

import sys

from aiohttp import web

received = {"requests": 0}


async def invoke(request: web.Request) -> web.Response:
    await request.read()
    received["requests"] += 1
    return web.Response(body=b"{}", content_type="application/json")


async def stats(_: web.Request) -> web.Response:
    return web.json_response(received)


if __name__ == "__main__":
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/invoke", invoke)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
