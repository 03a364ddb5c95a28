"""``broker status``: the deployment at a glance, in the style of ``kubectl get``: the mappings,
then the shards of mappings that are stuck or lagging, then the functions (``-o json``: the
status document as the API gives it; ``--watch``: again every few seconds)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from broker.commands.answers import endpoint_refused

LAGGING_MS = 60_000  # a shard this far behind is shown


def add_parser(sub: Any) -> None:
    command = sub.add_parser("status", help="what a running deployment is doing (mappings, shards, functions)")
    where = command.add_mutually_exclusive_group()
    where.add_argument("--endpoint", help="the broker's API (default: from -c, else http://127.0.0.1:9000)")
    where.add_argument("-c", "--config", help="a config file: its api host and port")
    command.add_argument("-o", "--output", choices=("table", "json"), default="table")
    command.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                         help="refresh every SECONDS (default 2) until interrupted")
    command.add_argument("--region", default="us-east-1", help="the region requests are signed for")


def _endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return str(args.endpoint)
    if args.config:
        from broker.config import load_config  # noqa: PLC0415 - only with -c

        api = load_config(args.config).broker.api
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host  # noqa: S104 - a listen address
        return f"http://{host}:{api.port}"
    return "http://127.0.0.1:9000"


def run(args: argparse.Namespace) -> int:
    from broker.aws.api_client import call  # noqa: PLC0415 - botocore only for this command
    from broker.errors import ConfigError  # noqa: PLC0415

    try:
        endpoint = _endpoint(args)
    except ConfigError as exc:
        print(f"broker status: {args.config}: {exc}", file=sys.stderr)
        return 2
    if endpoint_refused("status", endpoint):
        return 2
    while True:
        try:
            status, answer = call("GET", f"{endpoint.rstrip('/')}/broker/v1/status", region=args.region)
        except OSError as exc:
            print(f"broker status: cannot reach {endpoint}: {exc}", file=sys.stderr)
            return 1
        if status != 200:
            message = answer.get("message", answer) if isinstance(answer, dict) else answer
            print(f"broker: {status}: {message}", file=sys.stderr)
            return 1
        if args.watch:
            print("\033[H\033[2J", end="")
        print(json.dumps(answer, indent=2) if args.output == "json" else render(answer, now=time.time()), flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in [header, *rows])


def _source(arn: str) -> str:
    """``kinesis:orders``, ``sqs:jobs``, ``dynamodb:carts``."""
    parts = arn.split(":", 5)
    resource = parts[-1]
    return f"{parts[2]}:{resource.split('/')[1] if '/' in resource else resource}"


def _age(ms: float | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _rate(value: float) -> str:
    return f"{value:g}"


def render(doc: dict[str, Any], *, now: float) -> str:
    """The document as three tables (and the replicas, one line)."""
    mappings = []
    troubled = []
    for m in doc["Mappings"]:
        shards = m.get("Shards", [])
        ages = [s["IteratorAgeMilliseconds"] for s in shards if s.get("IteratorAgeMilliseconds") is not None]
        mappings.append([m["UUID"], m["FunctionName"], _source(m["EventSourceArn"]), m["State"], m["Origin"],
                         _rate(m["RecordsPerSecond"]), _rate(m["ErrorsPerSecond"]), str(m["InFlightBatches"]),
                         str(m["Pollers"]) if "Pollers" in m else f"{len(shards)} shards",
                         _age(max(ages)) if ages else "-", str(m.get("Quarantined", "-")), str(len(m["RunningOn"]))])
        for s in shards:
            lagging = (s.get("IteratorAgeMilliseconds") or 0) >= LAGGING_MS
            if "RetryingSince" in s or lagging or (s["Owner"] is None and s["State"] != "shard_end"):
                error = s.get("LastError") or {}
                troubled.append([m["UUID"], s["ShardId"], s["Owner"] or "-", s["State"], s["Checkpoint"] or "-",
                                 _age(s.get("IteratorAgeMilliseconds")), str(s.get("InFlight", 0)),
                                 _age((now - s["RetryingSince"]) * 1000) if "RetryingSince" in s else "-",
                                 str(error.get("errorMessage") or error.get("errorType") or "-")[:60]])
    functions = []
    for f in doc["Functions"]:
        queue = f.get("AsyncQueue", {})
        envs = f.get("Environments")
        functions.append([f["FunctionName"], f["Target"], f"{f['InUse']}/{f['ConcurrencyLimit']}",
                          str(f.get("Waiting", "-")), str(queue.get("Depth", "-")), str(queue.get("InFlight", "-")),
                          str(queue.get("DelayedRetries", "-")),
                          "-" if queue.get("OldestAgeSeconds") is None else f"{queue['OldestAgeSeconds']:.1f}s",
                          "-" if envs is None else f"{envs['initializing']}/{envs['idle']}/{envs['busy']}"])
    parts = [_table(["MAPPING", "FUNCTION", "SOURCE", "STATE", "ORIGIN", "REC/S", "ERR/S", "IN-FLIGHT",
                     "POLLERS/SHARDS", "WORST-AGE", "QUARANTINED", "REPLICAS"], mappings)]
    if troubled:
        parts.append(_table(["MAPPING", "SHARD", "OWNER", "STATE", "CHECKPOINT", "AGE", "IN-FLIGHT",
                             "RETRYING-FOR", "LAST-ERROR"], troubled))
    parts.append(_table(["FUNCTION", "TARGET", "IN-USE", "WAITING", "QUEUED", "IN-FLIGHT", "DELAYED", "OLDEST",
                         "ENVS(INIT/IDLE/BUSY)"], functions))
    replicas = ", ".join(f"{r['ReplicaId']} ({'ready' if r['Ready'] else 'not ready: ' + '; '.join(r['Problems'])})"
                         for r in doc["Replicas"])
    parts.append(f"replicas: {replicas or 'none'}")
    return "\n\n".join(parts)
