"""Kinesis throughput, latency and idle cost: the broker against a bare aiobotocore GetRecords loop.

    python benchmarks/streams.py [--records 20000] [--shards 4] [--idle-shards 1000] [--parts throughput,latency,idle,idle-capped]

Runs on kinesalite (npm, started here under the machine's node; the AWS emulator's Kinesis slows as
a stream grows) with an HTTP target that answers at once (benchmarks/target.py, its own process).
1. Throughput: a pre-filled 4-shard stream drained by `broker run` (BatchSize 100) and by a bare
   loop (per shard: GetRecords(2,000) -> POST each 100 -> next), steady-state records/s between
   10% and 90%.
2. Latency: one record every 50 ms; put -> target receipt, p50/p99, against the 1 s poll interval.
3. Idle: the broker holding --idle-shards empty shards (streams of 50) for 30 s: RSS, CPU share of a
   core and GetRecords per shard per second, with the lean GetRecords path and with aiobotocore's;
   meanwhile a record every ~1 s on a random idle shard, put -> target receipt (p50, max).
   idle-status: the same while GET /broker/v1/status is asked every 2 s (what the console does).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs import cpu_seconds, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "000000000000"


def start_kinesalite(shard_limit: int) -> tuple[subprocess.Popen[bytes], str]:
    root = ROOT / ".cache" / "kinesalite"
    script = root / "node_modules" / "kinesalite" / "cli.js"
    if not script.exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), "kinesalite@3"], check=True)
    port = free_port()
    proc = subprocess.Popen(["node", str(script), "--port", str(port), "--createStreamMs", "10",
                             "--shardLimit", str(shard_limit + 10)], stdout=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def kinesis(endpoint: str) -> Any:
    import boto3

    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")


def create(client: Any, name: str, shards: int) -> None:
    client.create_stream(StreamName=name, ShardCount=shards)
    while client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)


def fill(client: Any, name: str, count: int) -> None:
    for start in range(0, count, 500):
        client.put_records(StreamName=name, Records=[
            {"PartitionKey": f"k{i}", "Data": json.dumps({"n": i, "pad": "x" * 60}).encode()}
            for i in range(start, min(count, start + 500))])


def target_stats(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url.replace("/invoke", "/stats"), timeout=10) as r:
        return dict(json.loads(r.read()))


def broker_config(workdir: Path, name: str, endpoint: str, target: str, stream: str, *, batch: int,
                  position: str = "TRIM_HORIZON", idle_max: float = 0.0) -> tuple[Path, int]:
    port = free_port()
    path = workdir / f"{name}.yaml"
    path.write_text(json.dumps({
        "broker": {"aws_endpoint_url": endpoint, "account_id": ACCOUNT, "redis_url": "embedded", "data_dir": str(workdir / name),
                   "api": {"host": "127.0.0.1", "port": port}, "log_level": "warning",
                   "stream_discovery_interval_seconds": 300, "stream_idle_poll_max_seconds": idle_max},
        "functions": {"bench": {"Target": {"Url": target}, "Timeout": 30}},
        "event_source_mappings": [{"FunctionName": "bench", "BatchSize": batch, "StartingPosition": position,
                                   "EventSourceArn": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{stream}"}],
    }))
    return path, port


def run_broker(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)], env=env,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def steady_rate(target: str, before: int, count: int, pid: int) -> tuple[float, float]:
    marks: dict[str, tuple[float, int, float]] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        got = target_stats(target)["records"] - before
        now = time.monotonic()
        if "low" not in marks and got >= count * 0.1:
            marks["low"] = (now, got, cpu_seconds(pid))
        if "high" not in marks and got >= count * 0.9:
            marks["high"] = (now, got, cpu_seconds(pid))
            break
        time.sleep(0.01)
    (t0, n0, c0), (t1, n1, c1) = marks["low"], marks["high"]
    return (n1 - n0) / (t1 - t0), (c1 - c0) / (n1 - n0) * 1e6


async def baseline_worker(endpoint: str, stream: str, target: str) -> None:
    """Per shard: GetRecords(2,000, as the broker reads) -> POST each 100 in turn -> next iterator;
    1 s sleep when a read is empty. No limits kept, no checkpoints, no record shaping."""
    import aiohttp
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", region_name="us-east-1", endpoint_url=endpoint,
                                            aws_access_key_id="bench", aws_secret_access_key="bench") as k, \
            aiohttp.ClientSession() as http:
        shards = [s["ShardId"] for s in (await k.list_shards(StreamName=stream))["Shards"]]

        async def loop(shard: str) -> None:
            it = (await k.get_shard_iterator(StreamName=stream, ShardId=shard,
                                             ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
            while it:
                resp = await k.get_records(ShardIterator=it, Limit=2000)
                records = resp["Records"]
                for start in range(0, len(records), 100):
                    body = json.dumps({"Records": [{"SequenceNumber": r["SequenceNumber"],
                                                    "PartitionKey": r["PartitionKey"],
                                                    "Data": base64.b64encode(r["Data"]).decode()}
                                                   for r in records[start:start + 100]]})
                    async with http.post(target, data=body) as r:
                        await r.read()
                if not records:
                    await asyncio.sleep(1.0)
                it = resp.get("NextShardIterator")

        await asyncio.gather(*(loop(s) for s in shards))


def throughput(endpoint: str, target: str, workdir: Path, records: int, shards: int) -> None:
    client = kinesis(endpoint)
    create(client, "base", shards)
    fill(client, "base", records)
    before = target_stats(target)["records"]
    proc = subprocess.Popen([sys.executable, __file__, "--baseline-worker", endpoint, "base", target])
    base_rate, base_cpu = steady_rate(target, before, records, proc.pid)
    proc.terminate()
    proc.wait()
    create(client, "brok", shards)
    fill(client, "brok", records)
    before = target_stats(target)["records"]
    config, port = broker_config(workdir, "thr", endpoint, target, "brok", batch=100)
    proc = run_broker(config, port)
    rate, cpu = steady_rate(target, before, records, proc.pid)
    proc.terminate()
    proc.wait()
    print(f"throughput ({records} records, {shards} shards): baseline {base_rate:,.0f} rec/s {base_cpu:.0f} us/rec; "
          f"broker {rate:,.0f} rec/s {cpu:.0f} us/rec; ratio {rate / base_rate:.2f}x, CPU {cpu / base_cpu:.2f}x",
          flush=True)


def latency(endpoint: str, target: str, workdir: Path) -> None:
    client = kinesis(endpoint)
    create(client, "lat", 1)
    config, port = broker_config(workdir, "lat", endpoint, target + "?latency=1", "lat", batch=100)
    proc = run_broker(config, port)
    time.sleep(2)
    for i in range(200):
        client.put_record(StreamName="lat", PartitionKey="k", Data=json.dumps({"sent": time.time(), "n": i}).encode())
        time.sleep(0.05)
    time.sleep(2)
    proc.terminate()
    proc.wait()
    lat = sorted(target_stats(target)["latencies"])
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    print(f"latency put->invoke at 20 rec/s (poll interval 1.0 s): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
          f"({len(lat)} records; p50 = {p50:.2f}x the poll interval)", flush=True)


def idle(endpoint: str, target: str, workdir: Path, shards: int, idle_max: float, lean: bool = True,
         status: bool = False) -> None:
    """``shards`` empty shards spread over streams of 50 (kinesalite re-reads a whole stream's
    description on every GetRecords, so one stream of 1,000 shards would make the emulator the
    limit), one mapping per stream, measured for 30 s: RSS, CPU and GetRecords per shard per second."""
    client = kinesis(endpoint)
    per_stream = 50
    names = [f"idle{int(idle_max)}{'l' if lean else 'b'}{'s' if status else ''}-{i}"
             for i in range((shards + per_stream - 1) // per_stream)]
    for n, name in enumerate(names):
        create(client, name, min(per_stream, shards - n * per_stream))
    port = free_port()
    path = workdir / f"{names[0]}.yaml"
    path.write_text(json.dumps({
        "broker": {"aws_endpoint_url": endpoint, "account_id": ACCOUNT, "redis_url": "embedded", "data_dir": str(workdir / names[0]),
                   "api": {"host": "127.0.0.1", "port": port}, "log_level": "warning",
                   "stream_discovery_interval_seconds": 300, "stream_idle_poll_max_seconds": idle_max,
                   "stream_lean_get_records": lean},
        "functions": {"bench": {"Target": {"Url": target + "?latency=1"}, "Timeout": 30}},
        "event_source_mappings": [{"FunctionName": "bench", "BatchSize": 100, "StartingPosition": "LATEST",
                                   "EventSourceArn": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}"}
                                  for name in names],
    }))
    proc = run_broker(path, port)
    time.sleep(15 + idle_max)  # every shard consumer started and settled into its idle pace
    seen = len(target_stats(target)["latencies"])
    cpu0, t0, reads0 = cpu_seconds(proc.pid), time.monotonic(), stream_reads(port)
    rng = random.Random(7)
    polled: list[tuple[float, int]] = []
    poller = threading.Thread(target=poll_status, args=(port, t0 + 30, polled), daemon=True) if status else None
    if poller is not None:
        poller.start()
    while time.monotonic() - t0 < 30:  # now and then one record on a random idle shard
        time.sleep(rng.uniform(0.5, 1.5))
        client.put_record(StreamName=rng.choice(names), PartitionKey=f"k{rng.randrange(10**9)}",
                          Data=json.dumps({"sent": time.time()}).encode())
    cpu1, t1, reads1 = cpu_seconds(proc.pid), time.monotonic(), stream_reads(port)
    time.sleep(3)
    first = sorted(target_stats(target)["latencies"][seen:])
    rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS")))
    proc.terminate()
    proc.wait()
    pace = f"stream_idle_poll_max_seconds={idle_max:g}" if idle_max else "polled every 1 s like Lambda"
    path_name = "lean GetRecords" if lean else "aiobotocore GetRecords"
    if poller is not None:
        poller.join()
        took = sorted(t for t, _ in polled)
        path_name += (f", GET /broker/v1/status every 2 s: {len(polled)} answers of {polled[-1][1] / 1024:.0f} KiB, "
                      f"p50 {took[len(took) // 2] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms")
    polls = (reads1 - reads0) / (t1 - t0) / shards
    print(f"idle: {shards} shards in {len(names)} streams ({pace}, {path_name}): RSS {rss_kb / 1024:.0f} MB, "
          f"CPU {100 * (cpu1 - cpu0) / (t1 - t0):.1f}% of a core, {polls:.2f} polls per shard per second, "
          f"{(cpu1 - cpu0) / max(1, reads1 - reads0) * 1e6:.0f} µs of CPU per poll; first record on an idle shard: "
          f"p50 {first[len(first) // 2]:.2f} s, max {first[-1]:.2f} s ({len(first)} records)", flush=True)


def poll_status(port: int, until: float, out: list[tuple[float, int]]) -> None:
    """What the console does: the status document every 2 s."""
    import urllib.request

    while time.monotonic() < until:
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/broker/v1/status", timeout=30) as r:
            size = len(r.read())
        out.append((time.monotonic() - started, size))
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))


def stream_reads(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("broker_stream_reads_total{"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--idle-shards", type=int, default=1000)
    parser.add_argument("--parts", default="throughput,latency,idle,idle-botocore,idle-capped",
                        help="which measurements to run (comma-separated)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    kl, endpoint = start_kinesalite(max(4 * args.idle_shards, args.shards))
    tport = free_port()
    tproc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "target.py"), str(tport)])
    target = f"http://127.0.0.1:{tport}/invoke"
    try:
        wait_port(tport)
        with tempfile.TemporaryDirectory() as tmp:
            if "throughput" in parts:
                throughput(endpoint, target, Path(tmp), args.records, args.shards)
            if "latency" in parts:
                latency(endpoint, target, Path(tmp))
            if "idle" in parts and args.idle_shards:
                idle(endpoint, target, Path(tmp), args.idle_shards, 0.0)
            if "idle-botocore" in parts and args.idle_shards:
                idle(endpoint, target, Path(tmp), args.idle_shards, 0.0, lean=False)
            if "idle-status" in parts and args.idle_shards:
                idle(endpoint, target, Path(tmp), args.idle_shards, 0.0, status=True)
            if "idle-capped" in parts and args.idle_shards:
                idle(endpoint, target, Path(tmp), args.idle_shards, 30.0)
    finally:
        for p in (kl, tproc):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-worker":
        asyncio.run(baseline_worker(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        main()
