"""Concurrency permits: acquire+release per second against one redis-server, with 1 and 64
concurrent holders, and the latency a permit adds to each invocation.

    python benchmarks/permits.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from broker.clock import SystemClock
from broker.concurrency.permits import Permits, Pool
from broker.embedded import RedisServer


async def run(url: str, holders: int, seconds: float) -> tuple[float, float, float]:
    client = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, max_connections=64))
    permits = Permits(client, lambda name: Pool("{broker:fn:bench}:permits", 1000, "R"), clock=SystemClock(),
                      replica="bench")
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def holder() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with permits.hold("bench"):
                pass
            latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(holder() for _ in range(holders)))
    elapsed = time.monotonic() - started
    await client.aclose()
    latencies.sort()
    return len(latencies) / elapsed, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            for holders in (1, 64):
                rate, p50, p99 = asyncio.run(run(server.url, holders, args.seconds))
                print(f"{holders:>2} concurrent holders: {rate:,.0f} acquire+release/s; added latency per "
                      f"invocation p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
