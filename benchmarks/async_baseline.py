"""The bare loop benchmarks/async.py measures the broker against: an aiohttp server that XADDs each
Event invoke to a Redis stream (AOF) and answers 202, and in the same process a consumer-group loop
that reads 16 entries at a time, POSTs each event to the target with 32 in flight, and XACKs.
No permits, retries, ages, destinations or metrics: the floor of "durable queue, then deliver".

    python benchmarks/async_baseline.py PORT REDIS_URL TARGET_URL
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

STREAM = "bench:events"
GROUP = "workers"


async def main(port: int, redis_url: str, target: str) -> None:
    redis = aioredis.from_url(redis_url)
    with contextlib.suppress(aioredis.ResponseError):
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)

    async def invoke(request: web.Request) -> web.Response:
        await redis.xadd(STREAM, {"e": await request.read()})
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    slots = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def deliver(entry_id: bytes, body: bytes) -> None:
            try:
                async with http.post(target, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                await redis.xack(STREAM, GROUP, entry_id)
            finally:
                slots.release()

        tasks: set[asyncio.Task[None]] = set()
        while True:
            reply = await redis.xreadgroup(GROUP, "bare", {STREAM: ">"}, count=16, block=1000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    await slots.acquire()
                    task = asyncio.ensure_future(deliver(entry_id, fields[b"e"]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
