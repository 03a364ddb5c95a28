"""IsolateFailingKeys: does a poison record slow the shard's other keys? One shard, 10 keys x
--per-key records; the 5th record of one key fails for the whole run (the target reports it as a
failed batch item). The same stream is drained by `broker run` with and without the poison record
(ReportBatchItemFailures, IsolateFailingKeys, BatchSize 100), alternating, --runs times each; the
rate is the other 9 keys' records per second between 10% and 90% of them.

    python benchmarks/isolation.py [--per-key 2000] [--runs 3]

Without isolation a poison record stops the whole shard (Lambda's rule), so that case has no rate
to compare: the point is the ratio with / without the poison record, which should be ~1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs import free_port, wait_port
from streams import ROOT, broker_config, create, kinesis, run_broker, start_kinesalite, target_stats

KEYS, BAD_KEY, BAD_I = 10, "key-3", 4


def fill(client: object, name: str, per_key: int) -> None:
    records = [{"PartitionKey": f"key-{k}", "Data": json.dumps({"i": i, "pad": "x" * 60}).encode()}
               for i in range(per_key) for k in range(KEYS)]
    for start in range(0, len(records), 500):
        client.put_records(StreamName=name, Records=records[start:start + 500])  # type: ignore[attr-defined]


def drain(endpoint: str, target: str, workdir: Path, stream: str, poison: bool, good: int) -> float:
    """The other keys' records per second between 10% and 90% of them."""
    url = f"{target}?poison={BAD_KEY}:{BAD_I if poison else -1}"
    config, port = broker_config(workdir, stream, endpoint, url, stream, batch=100)
    doc = json.loads(config.read_text())
    doc["event_source_mappings"][0].update({"FunctionResponseTypes": ["ReportBatchItemFailures"],
                                            "IsolateFailingKeys": True})
    config.write_text(json.dumps(doc))
    before = target_stats(target)["good"]
    proc = run_broker(config, port)
    marks: dict[str, tuple[float, int]] = {}
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and "high" not in marks:
            got = target_stats(target)["good"] - before
            if "low" not in marks and got >= good * 0.1:
                marks["low"] = (time.monotonic(), got)
            if got >= good * 0.9:
                marks["high"] = (time.monotonic(), got)
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait()
    (t0, n0), (t1, n1) = marks["low"], marks["high"]
    return (n1 - n0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-key", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    kl, endpoint = start_kinesalite(4)
    tport = free_port()
    tproc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "target.py"), str(tport)])
    target = f"http://127.0.0.1:{tport}/invoke"
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        wait_port(tport)
        client = kinesis(endpoint)
        good = (KEYS - 1) * args.per_key
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for poison in (False, True):
                    name = f"s{run}{'p' if poison else 'c'}"
                    create(client, name, 1)
                    fill(client, name, args.per_key)
                    rates[poison].append(drain(endpoint, target, Path(tmp), name, poison, good))
    finally:
        for p in (kl, tproc):
            p.terminate()
            p.wait()
    clean, poisoned = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"other keys' records ({KEYS - 1} keys x {args.per_key}, 1 shard, {args.runs} runs each): "
          f"without the poison record {clean:,.0f} rec/s (runs {', '.join(f'{r:,.0f}' for r in rates[False])}); "
          f"with it {poisoned:,.0f} rec/s (runs {', '.join(f'{r:,.0f}' for r in rates[True])}); "
          f"ratio {poisoned / clean:.2f}x")


if __name__ == "__main__":
    main()
