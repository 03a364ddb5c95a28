"""Asynchronous invocation: Event invokes accepted per second, 202 latency, end-to-end events/s,
against a bare loop in the same run (benchmarks/async_baseline.py: XADD then 202; a consumer-group
loop POSTing each event with 32 in flight, XACK) with the ratio printed.

    python benchmarks/async.py [--events 6000] [--concurrency 32] [--rounds 3] [--rate 2000] [--seconds 5]

`broker run` (embedded redis-server with AOF) with one function whose target (benchmarks/target.py,
its own process) answers at once. Two measurements, both by a client process on the same machine:

- burst (each round): ``--events`` Event invokes from ``--concurrency`` connections as fast as they
  are answered: accepted/s and the 202's p50/p99 at saturation (where, by Little's law, the mean
  latency is concurrency / throughput), and end-to-end events/s from the first 202 until the target
  has seen every event. Rounds alternate between the bare loop and the broker, both running
  throughout, and the ratios printed are the medians of the per-round ratios (the machine's drift
  over a run hits both alike).
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
from sqs import cpu_seconds, free_port, wait_port
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


async def burst_round(http: Any, args: argparse.Namespace, url: str, target: str,
                      pid: int) -> tuple[float, float, float, float, float]:
    """One burst: accepted/s, 202 p50 and p99 (ms), end-to-end events/s, and the server's CPU per
    event (µs: its Invoke API and its delivery together)."""
    delivered = target_stats(target)["requests"] + args.events
    cpu = cpu_seconds(pid)
    rate, lat, first = await burst(http, url, args.events, args.concurrency)
    await _until_delivered(target, delivered)
    e2e = args.events / (time.monotonic() - first)
    return rate, _pct(lat, 0.5), _pct(lat, 0.99), e2e, (cpu_seconds(pid) - cpu) / args.events * 1e6


async def measure(args: argparse.Namespace, urls: dict[str, tuple[str, int]], target: str) -> None:
    """Rounds alternate between the bare loop and the broker (the machine's drift hits both); the
    ratios are the medians of the per-round ratios."""
    import aiohttp

    rounds: dict[str, list[tuple[float, float, float, float, float]]] = {label: [] for label in urls}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
        for n in range(args.rounds):
            for label, (url, pid) in urls.items():
                r = await burst_round(http, args, url, target, pid)
                rounds[label].append(r)
                print(f"{label} burst round {n + 1}: accepted {r[0]:,.0f}/s; 202 p50 {r[1]:.1f} ms, "
                      f"p99 {r[2]:.1f} ms; end to end {r[3]:,.0f} events/s; {r[4]:.0f} µs of CPU per event",
                      flush=True)
        lat = await steady(http, urls["broker"][0], args.rate, args.seconds)
    for label, rs in rounds.items():
        print(f"{label} (median of {args.rounds} rounds, {args.events} events from {args.concurrency} connections): "
              f"accepted {statistics.median(r[0] for r in rs):,.0f}/s; 202 p50 {statistics.median(r[1] for r in rs):.1f}"
              f" ms, p99 {statistics.median(r[2] for r in rs):.1f} ms; end to end "
              f"{statistics.median(r[3] for r in rs):,.0f} events/s; {statistics.median(r[4] for r in rs):.0f} µs "
              f"of CPU per event", flush=True)
    print(f"broker steady {args.rate:,}/s for {args.seconds:g} s: 202 p50 {_pct(lat, 0.5):.1f} ms, "
          f"p99 {_pct(lat, 0.99):.1f} ms", flush=True)
    pairs = list(zip(rounds["broker"], rounds["bare loop"], strict=True))
    accepted = statistics.median(b[0] / a[0] for b, a in pairs)
    e2e = statistics.median(b[3] / a[3] for b, a in pairs)
    cpu = statistics.median(b[4] / a[4] for b, a in pairs)
    print(f"ratio broker / bare loop (median of per-round ratios): accepted {accepted:.2f}x, end to end {e2e:.2f}x, "
          f"CPU per event {cpu:.2f}x "
          f"(202 p99 {statistics.median(b[2] for b, _ in pairs):.1f} vs "
          f"{statistics.median(a[2] for _, a in pairs):.1f} ms)", flush=True)


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
        proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)],
                                stderr=subprocess.DEVNULL, env=dict(os.environ))
        try:
            wait_port(tport)
            wait_port(bport)
            wait_port(port)
            path = "/2015-03-31/functions/bench/invocations"
            asyncio.run(measure(args, {"bare loop": (f"http://127.0.0.1:{bport}{path}", bare.pid),
                                       "broker": (f"http://127.0.0.1:{port}{path}", proc.pid)}, target))
        finally:
            for p in (bare, proc):
                p.terminate()
                p.wait()
            redis.stop()
            tproc.terminate()
            tproc.wait()


if __name__ == "__main__":
    main()
