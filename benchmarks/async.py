"""Asynchronous invocation: Event invokes accepted per second, 202 latency, end-to-end events/s.

    python benchmarks/async.py [--events 10000] [--concurrency 64]

`broker run` (embedded redis-server with AOF) with one function whose target (benchmarks/target.py,
its own process) answers at once. A client process fires Event invokes at the given concurrency;
accepted/s and p50/p99 of the 202 are measured by the client, end-to-end events/s from the first
202 until the target has seen every event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs import free_port, wait_port
from streams import target_stats

ROOT = Path(__file__).resolve().parent.parent


async def fire(url: str, events: int, concurrency: int) -> tuple[float, list[float], float]:
    import aiohttp

    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(events):
        queue.put_nowait(i)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                async with http.post(url, data=json.dumps({"i": i, "pad": "x" * 200}),
                                     headers={"X-Amz-Invocation-Type": "Event"}) as r:
                    assert r.status == 202, r.status
                    await r.read()
                latencies.append(time.perf_counter() - started)

        first = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - first
    return events / elapsed, sorted(latencies), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    tport, port = free_port(), free_port()
    tproc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "target.py"), str(tport)])
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "async.yaml"
        config.write_text(json.dumps({
            "broker": {"redis_url": "embedded", "data_dir": str(Path(tmp) / "data"), "log_level": "warning",
                       "api": {"host": "127.0.0.1", "port": port}, "async_concurrency": 64},
            "functions": {"bench": {"Target": {"Url": f"http://127.0.0.1:{tport}/invoke"}, "Timeout": 30}}}))
        proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)], stderr=subprocess.DEVNULL,
                                env=dict(os.environ))
        try:
            wait_port(tport)
            wait_port(port)
            url = f"http://127.0.0.1:{port}/2015-03-31/functions/bench/invocations"
            rate, lat, first = asyncio.run(fire(url, args.events, args.concurrency))
            target = f"http://127.0.0.1:{tport}/invoke"
            while target_stats(target)["requests"] < args.events:
                time.sleep(0.02)
            end_to_end = args.events / (time.monotonic() - first)
        finally:
            proc.terminate()
            proc.wait()
            tproc.terminate()
            tproc.wait()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    print(f"events={args.events} client concurrency={args.concurrency}")
    print(f"accepted: {rate:,.0f} Event invokes/s; 202 latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print(f"end to end (first 202 -> target saw all): {end_to_end:,.0f} events/s")


if __name__ == "__main__":
    main()
