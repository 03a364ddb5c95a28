"""``broker quarantine list|replay|discard``: the quarantine API from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from broker.commands.answers import Call, endpoint_refused
from broker.commands.answers import said as _said


def add_parser(sub: Any) -> None:
    command = sub.add_parser("quarantine", help="list, replay or discard what was given up")
    command.add_argument("action", choices=("list", "replay", "discard"))
    command.add_argument("ids", nargs="*", help="entry ids (replay, discard); or --all")
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("--mapping", metavar="UUID", help="a stream mapping's quarantine")
    which.add_argument("--function", metavar="NAME", help="a function's quarantine (async events)")
    command.add_argument("--all", action="store_true", help="every entry (replay, discard)")
    command.add_argument("--endpoint", default="http://127.0.0.1:9000", help="the broker's API (default %(default)s)")
    command.add_argument("--region", default="us-east-1", help="the region requests are signed for")
    command.add_argument("--max-items", type=int, default=100, help="entries per page (list)")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except OSError as exc:  # connection refused, DNS, timeout
        print(f"broker quarantine: cannot reach {args.endpoint}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from broker.aws.api_client import call  # noqa: PLC0415 - botocore only for this command

    if endpoint_refused("quarantine", args.endpoint):
        return 2
    scope = (f"mappings/{urllib.parse.quote(args.mapping)}" if args.mapping
             else f"functions/{urllib.parse.quote(args.function)}")
    base = f"{args.endpoint.rstrip('/')}/broker/v1/{scope}/quarantine"
    if args.action == "list":
        if args.ids or args.all:
            print("broker quarantine list takes no ids and no --all", file=sys.stderr)
            return 2
        return _list(call, base, args)
    if bool(args.ids) == args.all:
        print(f"broker quarantine {args.action}: give entry ids or --all (not both)", file=sys.stderr)
        return 2
    status, answer = call("POST", f"{base}/{args.action}", {"All": True} if args.all else {"Ids": args.ids},
                          region=args.region)
    return _said(status, answer)


def _list(call: Call, base: str, args: argparse.Namespace) -> int:
    marker = None
    while True:
        query = urllib.parse.urlencode({"MaxItems": args.max_items, **({"Marker": marker} if marker else {})})
        status, answer = call("GET", f"{base}?{query}", region=args.region)
        if status != 200:
            return _said(status, answer)
        for entry in answer["Records"]:
            print(json.dumps(entry, separators=(",", ":")))
        marker = answer.get("NextMarker")
        if not marker:
            return 0


