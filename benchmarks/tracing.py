"""What tracing costs: `broker run` with OpenTelemetry spans on (sample ratio 1.0, exported over
OTLP/HTTP to a sink that answers at once) against tracing off, in the same run, rounds alternating.

    python benchmarks/tracing.py [--messages 20000] [--events 4000] [--rounds 2] [--sample-ratio 1.0]

1. SQS: a pre-filled queue drained (BatchSize 100, a filter, as benchmarks/sqs.py): CPU per message.
2. Async: --events Event invokes from 32 connections, until the target has every one: CPU per event
   (the Invoke API, the queue and the delivery: three spans per event with tracing on).
The goal is under 10% more CPU per message with tracing on; off is the broker as it always runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs import ACCOUNT, fill, free_port, run_broker, wait_port
from streams import target_stats

burst_round = importlib.import_module("async").burst_round  # benchmarks/async.py: "async" is a keyword

ROOT = Path(__file__).resolve().parent.parent


SAMPLE_RATIO = [1.0]  # --sample-ratio


def tracing_settings(sink: str, on: bool) -> dict[str, Any]:
    return {"tracing": {"exporter": "otlp", "endpoint": sink, "sample_ratio": SAMPLE_RATIO[0]}} if on else {}


def async_round(target: str, sink: str, on: bool, events: int, workdir: Path, name: str) -> float:
    port = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(json.dumps({
        "broker": {"redis_url": "embedded", "data_dir": str(workdir / name), "account_id": ACCOUNT,
                   "api": {"host": "127.0.0.1", "port": port}, "log_level": "warning",
                   **tracing_settings(sink, on)},
        "functions": {"bench": {"Target": {"Url": target}, "Timeout": 30}}}))
    proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)], stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    try:
        wait_port(port)
        return asyncio.run(_async_burst(port, target, events, proc.pid))
    finally:
        proc.terminate()
        proc.wait()


async def _async_burst(port: int, target: str, events: int, pid: int) -> float:
    import aiohttp

    args = argparse.Namespace(events=events, concurrency=32)
    async with aiohttp.ClientSession() as http:
        *_, cpu = await burst_round(http, args, f"http://127.0.0.1:{port}/2015-03-31/functions/bench/invocations",
                                    target, pid)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sample-ratio", type=float, default=1.0, help="of new traces, with tracing on")
    args = parser.parse_args()
    SAMPLE_RATIO[0] = args.sample_ratio
    sqs_port, target_port = free_port(), free_port()
    servers = [subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "sqs_endpoint.py"), str(sqs_port)]),
               subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "target.py"), str(target_port)])]
    endpoint, target = f"http://127.0.0.1:{sqs_port}", f"http://127.0.0.1:{target_port}/invoke"
    sink = f"http://127.0.0.1:{target_port}"
    sqs: dict[bool, list[float]] = {False: [], True: []}
    events: dict[bool, list[float]] = {False: [], True: []}
    try:
        wait_port(sqs_port)
        wait_port(target_port)
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(args.rounds):
                for on in (False, True):
                    name = f"q{n}{'t' if on else 'o'}"
                    url = fill(endpoint, name, args.messages)
                    sqs[on].append(run_broker(endpoint, name, url, target, 8, args.messages, Path(tmp),
                                              tracing_settings(sink, on))[1])
                    events[on].append(async_round(target, sink, on, args.events, Path(tmp), f"a{n}{int(on)}"))
                    print(f"round {n + 1}, tracing {'on' if on else 'off'}: SQS {sqs[on][-1]:.0f} us/msg, "
                          f"async {events[on][-1]:.0f} us/event", flush=True)
        print(f"spans exported to the sink: {target_stats(target).get('trace_bytes', 0) / 1e6:.1f} MB")
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
    for what, results in (("SQS (per message)", sqs), ("async (per event)", events)):
        off, on = statistics.median(results[False]), statistics.median(results[True])
        print(f"{what}: tracing off {off:.0f} us of CPU, on (sample ratio {args.sample_ratio:g}) {on:.0f} us: "
              f"{on / off:.2f}x")


if __name__ == "__main__":
    main()
