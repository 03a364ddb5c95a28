"""Asynchronous invocation: Event invokes accepted per second, 202 latency, end-to-end events/s.

    python benchmarks/async.py [--events 10000] [--concurrency 64] [--rounds 3] [--rate 2000] [--seconds 5]

`broker run` (embedded redis-server with AOF) with one function whose target (benchmarks/target.py,
its own process) answers at once. Two measurements, both by a client process on the same machine:

- burst (each round): ``--events`` Event invokes from ``--concurrency`` connections as fast as they
  are answered: accepted/s and the 202's p50/p99 at saturation (where, by Little's law, the mean
  latency is concurrency / throughput), and end-to-end events/s from the first 202 until the target
  has seen every event. Rounds run back to back on one broker; the median round is reported.
- steady: ``--rate`` invokes per second sent on a fixed schedule (open loop, so a slow answer
  does not slow the sender) for ``--seconds``: the 202's p50/p99 at that load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs import free_port, wait_port
from streams import target_stats

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"X-Amz-Invocation-Type": "Event"}


def _body(i: int) -> str:
    return json.dumps({"i": i, "pad": "x" * 200})


async def burst(http: Any, url: str, events: int, concurrency: int) -> tuple[float, list[float], float]:
    latencies: list[float] = []
    todo = iter(range(events))

    async def worker() -> None:
        for i in todo:
            started = time.perf_counter()
            async with http.post(url, data=_body(i), headers=HEADERS) as r:
                assert r.status == 202, r.status
                await r.read()
            latencies.append(time.perf_counter() - started)

    first = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return events / (time.monotonic() - first), sorted(latencies), first


async def steady(http: Any, url: str, rate: int, seconds: float) -> list[float]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        async with http.post(url, data=_body(i), headers=HEADERS) as r:
            assert r.status == 202, r.status
            await r.read()
        latencies.append(time.perf_counter() - started)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    return sorted(latencies)


async def _until_delivered(target: str, count: int) -> None:
    while True:  # the target is another process: poll its counter
        if target_stats(target)["requests"] >= count:
            return
        await asyncio.sleep(0.02)


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] * 1000


async def measure(args: argparse.Namespace, url: str, target: str) -> None:
    import aiohttp

    delivered = 0
    rounds: list[tuple[float, float, float, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
        for n in range(args.rounds):
            rate, lat, first = await burst(http, url, args.events, args.concurrency)
            delivered += args.events
            await _until_delivered(target, delivered)
            end_to_end = args.events / (time.monotonic() - first)
            rounds.append((rate, _pct(lat, 0.5), _pct(lat, 0.99), end_to_end))
            print(f"burst round {n + 1}: accepted {rate:,.0f}/s; 202 p50 {_pct(lat, 0.5):.1f} ms, "
                  f"p99 {_pct(lat, 0.99):.1f} ms; end to end {end_to_end:,.0f} events/s")
        lat = await steady(http, url, args.rate, args.seconds)
    median = sorted(rounds)[len(rounds) // 2]
    print(f"events={args.events} concurrency={args.concurrency} rounds={args.rounds}")
    print(f"burst (median round): accepted {median[0]:,.0f} Event invokes/s; 202 p50 {median[1]:.1f} ms, "
          f"p99 {median[2]:.1f} ms; end to end {statistics.median(r[3] for r in rounds):,.0f} events/s")
    print(f"steady {args.rate:,}/s for {args.seconds:g} s: 202 p50 {_pct(lat, 0.5):.1f} ms, p99 {_pct(lat, 0.99):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
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
            asyncio.run(measure(args, f"http://127.0.0.1:{port}/2015-03-31/functions/bench/invocations",
                                f"http://127.0.0.1:{tport}/invoke"))
        finally:
            proc.terminate()
            proc.wait()
            tproc.terminate()
            tproc.wait()


if __name__ == "__main__":
    main()
