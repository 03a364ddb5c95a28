"""Asynchronous invocation: Event invokes accepted per second, 202 latency, end-to-end events/s,
against a bare loop in the same run (benchmarks/async_baseline.py: XADD then 202; a consumer-group
loop POSTing each event with 32 in flight, XACK) with the ratio printed.

    python benchmarks/async.py [--events 6000] [--concurrency 32] [--rounds 3] [--rate 2000] [--seconds 5]

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


async def measure(args: argparse.Namespace, url: str, target: str, *, label: str,
                  steady_too: bool = True) -> tuple[float, float, float, float]:
    import aiohttp

    delivered = target_stats(target)["requests"]
    rounds: list[tuple[float, float, float, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
        for n in range(args.rounds):
            rate, lat, first = await burst(http, url, args.events, args.concurrency)
            delivered += args.events
            await _until_delivered(target, delivered)
            end_to_end = args.events / (time.monotonic() - first)
            rounds.append((rate, _pct(lat, 0.5), _pct(lat, 0.99), end_to_end))
            print(f"{label} burst round {n + 1}: accepted {rate:,.0f}/s; 202 p50 {_pct(lat, 0.5):.1f} ms, "
                  f"p99 {_pct(lat, 0.99):.1f} ms; end to end {end_to_end:,.0f} events/s", flush=True)
        lat = await steady(http, url, args.rate, args.seconds) if steady_too else []
    median = sorted(rounds)[len(rounds) // 2]
    e2e = statistics.median(r[3] for r in rounds)
    print(f"{label} (median round of {args.rounds}, {args.events} events from {args.concurrency} connections): "
          f"accepted {median[0]:,.0f}/s; 202 p50 {median[1]:.1f} ms, p99 {median[2]:.1f} ms; end to end "
          f"{e2e:,.0f} events/s", flush=True)
    if lat:
        print(f"{label} steady {args.rate:,}/s for {args.seconds:g} s: 202 p50 {_pct(lat, 0.5):.1f} ms, "
              f"p99 {_pct(lat, 0.99):.1f} ms", flush=True)
    return median[0], median[2], e2e, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from broker.embedded import RedisServer

    tport, port, bport = free_port(), free_port(), free_port()
    tproc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "target.py"), str(tport)])
    target = f"http://127.0.0.1:{tport}/invoke"
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "bare-redis")  # AOF everysec, like the broker's
        redis.start()
        bare = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "async_baseline.py"), str(bport),
                                 redis.url, target])
        config = Path(tmp) / "async.yaml"
        config.write_text(json.dumps({
            "broker": {"redis_url": "embedded", "data_dir": str(Path(tmp) / "data"), "log_level": "warning",
                       "api": {"host": "127.0.0.1", "port": port}, "async_concurrency": 64},
            "functions": {"bench": {"Target": {"Url": target}, "Timeout": 30}}}))
        try:
            wait_port(tport)
            wait_port(bport)
            path = "/2015-03-31/functions/bench/invocations"
            base = asyncio.run(measure(args, f"http://127.0.0.1:{bport}{path}", target, label="bare loop",
                                       steady_too=False))
            bare.terminate()
            bare.wait()
            proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)],
                                    stderr=subprocess.DEVNULL, env=dict(os.environ))
            try:
                wait_port(port)
                got = asyncio.run(measure(args, f"http://127.0.0.1:{port}{path}", target, label="broker"))
            finally:
                proc.terminate()
                proc.wait()
            print(f"ratio broker / bare loop: accepted {got[0] / base[0]:.2f}x, end to end {got[2] / base[2]:.2f}x "
                  f"(202 p99 {got[1]:.1f} vs {base[1]:.1f} ms)", flush=True)
        finally:
            if bare.poll() is None:
                bare.terminate()
            redis.stop()
            tproc.terminate()
            tproc.wait()


if __name__ == "__main__":
    main()
