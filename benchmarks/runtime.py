"""Execution environments: sync invokes per second through N managed awslambdaric environments vs
the same handler called in the broker's process (InProcess: true), both through the Invoke API in
the same run; the latency the environments add per invocation (p50/p99); and cold-start time.

    python benchmarks/runtime.py [--environments 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from broker.app import App
from broker.config import load_config
from broker.embedded import RedisServer
from broker.observability.metrics import Metrics

HANDLER = "benchmarks.runtime_handler:handler"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the handler imports from the checkout, in process and in its environments


async def drive(port: int, function: str, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations"
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with http.post(url, data=b'{"n": 1}') as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


async def run(tmp: Path, redis_url: str, environments: int, seconds: float) -> None:
    config = tmp / "broker.yaml"
    config.write_text(yaml.safe_dump({
        "broker": {"redis_url": redis_url, "api": {"host": "127.0.0.1", "port": 0}, "log_level": "warning",
                   "account_concurrency": 1000, "data_dir": str(tmp / "data")},
        "functions": {
            "managed": {"Target": {"Handler": HANDLER}, "Timeout": 10,
                        "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": environments},
                        "ReservedConcurrentExecutions": environments},
            "inprocess": {"Target": {"Handler": HANDLER, "InProcess": True}, "Timeout": 10},
            "cold": {"Target": {"Handler": HANDLER}, "Timeout": 10},
        },
    }))
    metrics = Metrics()
    app = App(load_config(config, env={}), metrics=metrics)
    task = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # a start-up error
    assert app.api_port is not None
    try:
        await asyncio.sleep(2)  # the provisioned environments initialise
        await drive(app.api_port, "managed", environments, 1)  # warm-up
        await drive(app.api_port, "inprocess", environments, 1)
        base_rate, base = await drive(app.api_port, "inprocess", environments, seconds)
        rate, lat = await drive(app.api_port, "managed", environments, seconds)
        print(f"in-process handler, {environments} concurrent: {base_rate:,.0f} invokes/s, "
              f"p50 {pct(base, 0.5):.2f} ms, p99 {pct(base, 0.99):.2f} ms", flush=True)
        print(f"{environments} managed environments:      {rate:,.0f} invokes/s ({rate / base_rate:.2f}x), "
              f"p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms; added p50 "
              f"{pct(lat, 0.5) - pct(base, 0.5):.2f} ms, p99 {pct(lat, 0.99) - pct(base, 0.99):.2f} ms", flush=True)
        colds = []
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                host = app.runtimes["cold"]
                for env in list(host.dispatcher.environments.values()):
                    if env.process is not None:
                        env.process.kill()
                await asyncio.sleep(0.5)
                started = time.perf_counter()
                async with http.post(f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/cold/invocations",
                                     data=b"{}") as resp:
                    await resp.read()
                colds.append(time.perf_counter() - started)
        init = metrics.registry.get_sample_value("broker_init_duration_seconds_sum", {"function": "cold"}) or 0
        count = metrics.registry.get_sample_value("broker_init_duration_seconds_count", {"function": "cold"}) or 1
        print(f"cold start (first invoke of a new environment): median {statistics.median(colds) * 1000:.0f} ms "
              f"end to end, init {init / count * 1000:.0f} ms (awslambdaric process start and handler import)",
              flush=True)
    finally:
        app.request_stop()
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environments", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            asyncio.run(run(Path(tmp), server.url, args.environments, args.seconds))
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
