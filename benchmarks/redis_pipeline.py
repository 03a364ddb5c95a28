"""Auto-pipelining: XADDs from concurrent tasks through redis-py one by one (the baseline), through
``AutoPipeline`` on redis-py's Pipeline object, and through ``AutoPipeline`` on its direct link (the
broker's path for one server or a Sentinel's primary), against one redis-server, in the same run:
commands/s and CPU per command.

    python benchmarks/redis_pipeline.py [--commands 20000] [--tasks 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from broker.embedded import RedisServer
from broker.redis.pipeline import AutoPipeline

DOC = "x" * 300


async def _drain(todo: Iterator[int], send: Callable[[], Awaitable[Any]]) -> None:
    for _ in todo:
        await send()


async def measure(url: str, commands: int, tasks: int, rounds: int) -> None:
    client = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, max_connections=64))
    on_pipeline, direct = AutoPipeline(client, direct=False), AutoPipeline(client)
    modes = {
        "redis-py, one command per round trip": lambda: client.xadd("bench", {"e": DOC}),
        "AutoPipeline on redis-py's Pipeline": lambda: on_pipeline.execute("XADD", "bench", "*", "e", DOC),
        "AutoPipeline on its direct link": lambda: direct.execute("XADD", "bench", "*", "e", DOC),
    }
    for n in range(rounds):
        for name, send in modes.items():
            todo = iter(range(commands))
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(_drain(todo, send) for _ in range(tasks)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"round {n + 1}: {name}: {commands / wall:,.0f} XADD/s, {cpu / commands * 1e6:.1f} µs CPU each",
                  flush=True)
            await client.delete("bench")
    await direct.aclose()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            asyncio.run(measure(server.url, args.commands, args.tasks, args.rounds))
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
