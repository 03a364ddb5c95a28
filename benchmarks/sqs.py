"""SQS throughput and CPU: the broker against a bare aiobotocore loop, in one run.

    python benchmarks/sqs.py [--messages 20000] [--concurrency 8] [--rounds 2]

Both consumers drain the same kind of pre-filled queue on benchmarks/sqs_endpoint.py (an O(1)
SQS-compatible endpoint in its own process) into benchmarks/target.py (an HTTP target that answers
at once, its own process):
- baseline: C concurrent loops of ReceiveMessage(10) -> POST {"Records": [raw messages]} -> DeleteMessageBatch;
- broker: `broker run` with C pollers, BatchSize 100, a 1 s batching window and a filter that keeps
  every message (so filtering does its full work), Lambda's record shape, metrics and logs.
The queue's messages are held until the consumer is idle, then released at once; throughput is the
steady-state rate between 10% and 90% deleted, CPU comes from /proc for the consumer process alone
over the same span.
Rounds alternate baseline and broker; medians are reported with the broker/baseline ratio.
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
import urllib.request
from pathlib import Path
from typing import Any

from broker.embedded import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "000000000000"
TICKS = os.sysconf("SC_CLK_TCK")


def wait_port(port: int) -> None:
    wait_for_port(port, timeout=30)


def sqs_call(endpoint: str, op: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(endpoint + "/", data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": f"AmazonSQS.{op}", "Content-Type": "application/x-amz-json-1.0"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def fill(endpoint: str, name: str, count: int) -> str:
    url = sqs_call(endpoint, "CreateQueue", {"QueueName": name, "Attributes": {
        "VisibilityTimeout": "60", "BenchHold": "true"}})["QueueUrl"]
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"type": "order", "id": start + i, "amount": 12.5,
                                                              "note": "x" * 40})}
                   for i in range(min(10, count - start))]
        sqs_call(endpoint, "SendMessageBatch", {"QueueUrl": url, "Entries": entries})
    return str(url)


def measure(endpoint: str, url: str, pid: int, count: int) -> tuple[float, float]:
    """Release the held messages and wait until all are deleted. Returns the steady-state rate
    (messages/s between 10% and 90% deleted, so start-up and a last batching window do not count)
    and the consumer's CPU microseconds per message over the same span."""
    time.sleep(2.0)  # let the consumer settle into idle long polls
    sqs_call(endpoint, "BenchRelease", {"QueueUrl": url})
    marks: dict[str, tuple[float, int, float]] = {}
    while True:
        stats = sqs_call(endpoint, "BenchStats", {"QueueUrl": url})
        now, deleted = time.monotonic(), stats["deleted"]
        if "low" not in marks and deleted >= count * 0.1:
            marks["low"] = (now, deleted, cpu_seconds(pid))
        if "high" not in marks and deleted >= count * 0.9:
            marks["high"] = (now, deleted, cpu_seconds(pid))
        if deleted >= count:
            break
        time.sleep(0.01)
    (t0, n0, c0), (t1, n1, c1) = marks["low"], marks["high"]
    return (n1 - n0) / (t1 - t0), (c1 - c0) / (n1 - n0) * 1e6


def run_baseline(endpoint: str, url: str, target: str, concurrency: int, count: int) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, __file__, "--baseline-worker", endpoint, url, target, str(concurrency)])
    try:
        return measure(endpoint, url, proc.pid, count)
    finally:
        proc.terminate()
        proc.wait()


def run_broker(endpoint: str, name: str, url: str, target: str, concurrency: int, count: int,
               workdir: Path, settings: dict[str, Any] | None = None) -> tuple[float, float]:
    port = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(json.dumps({
        "broker": {"aws_endpoint_url": endpoint, "account_id": ACCOUNT, "redis_url": "embedded", "data_dir": str(workdir / name),
                   "api": {"host": "127.0.0.1", "port": port}, "sqs_initial_pollers": concurrency,
                   "sqs_min_pollers": concurrency, "sqs_wait_time_seconds": 1, "log_format": "json",
                   **(settings or {})},
        "functions": {"bench": {"Target": {"Url": target}, "Timeout": 30}},
        "event_source_mappings": [{
            "FunctionName": "bench", "EventSourceArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}",
            "BatchSize": 100, "MaximumBatchingWindowInSeconds": 1,
            "ScalingConfig": {"MaximumConcurrency": max(2, concurrency)},
            "FilterCriteria": {"Filters": [{"Pattern": '{"body": {"type": ["order"]}}'}]}}],
    }))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    with (workdir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)], stderr=log, env=env)
    try:
        wait_port(port)
        return measure(endpoint, url, proc.pid, count)
    finally:
        proc.terminate()
        proc.wait()


async def baseline_worker(endpoint: str, url: str, target: str, concurrency: int) -> None:
    """The bare loop: what any minimal consumer must do, nothing more."""
    import aiohttp
    from aiobotocore.session import get_session

    session = get_session()
    async with session.create_client("sqs", region_name="us-east-1", endpoint_url=endpoint,
                                     aws_access_key_id="bench", aws_secret_access_key="bench") as sqs, \
            aiohttp.ClientSession() as http:
        async def loop() -> None:
            while True:
                resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
                messages = resp.get("Messages", [])
                if not messages:
                    continue
                async with http.post(target, data=json.dumps({"Records": messages})) as r:
                    await r.read()
                await sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])

        await asyncio.gather(*(loop() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sqs_port, target_port = free_port(), free_port()
    servers = [subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "sqs_endpoint.py"), str(sqs_port)]),
               subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "target.py"), str(target_port)])]
    endpoint, target = f"http://127.0.0.1:{sqs_port}", f"http://127.0.0.1:{target_port}/invoke"
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "broker": []}
    try:
        wait_port(sqs_port)
        wait_port(target_port)
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(args.rounds):
                name = f"base{n}"
                url = fill(endpoint, name, args.messages)
                results["baseline"].append(run_baseline(endpoint, url, target, args.concurrency, args.messages))
                name = f"broker{n}"
                url = fill(endpoint, name, args.messages)
                results["broker"].append(run_broker(endpoint, name, url, target, args.concurrency, args.messages,
                                                    Path(tmp)))
                print(f"round {n + 1}: baseline {results['baseline'][-1][0]:,.0f} msg/s "
                      f"{results['baseline'][-1][1]:.0f} us/msg; broker {results['broker'][-1][0]:,.0f} msg/s "
                      f"{results['broker'][-1][1]:.0f} us/msg", flush=True)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
    base_rate = statistics.median(r[0] for r in results["baseline"])
    base_cpu = statistics.median(r[1] for r in results["baseline"])
    rate = statistics.median(r[0] for r in results["broker"])
    cpu = statistics.median(r[1] for r in results["broker"])
    print(f"\nmessages={args.messages} concurrency={args.concurrency} rounds={args.rounds} (medians)")
    print(f"baseline (bare aiobotocore loop): {base_rate:,.0f} msg/s, {base_cpu:.0f} CPU us/msg")
    print(f"broker (batching + filter):       {rate:,.0f} msg/s, {cpu:.0f} CPU us/msg")
    print(f"ratio broker/baseline: throughput {rate / base_rate:.2f}x, CPU per message {cpu / base_cpu:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-worker":
        asyncio.run(baseline_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
    else:
        main()
