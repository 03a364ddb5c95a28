"""``broker rewind``: set a live stream mapping's position through the API (every replica's
consumers stop after their batch in flight and resume there)."""

from __future__ import annotations

import argparse
import datetime
import sys
import urllib.parse
from typing import Any

from broker.commands.answers import endpoint_refused, said


def add_parser(sub: Any) -> None:
    command = sub.add_parser("rewind", help="set a stream mapping's position (read again, or skip ahead)")
    command.add_argument("--mapping", metavar="UUID", required=True, help="the Kinesis or DynamoDB stream mapping")
    where = command.add_mutually_exclusive_group(required=True)
    where.add_argument("--trim-horizon", action="store_true", help="every shard from its oldest record")
    where.add_argument("--latest", action="store_true", help="every shard from now on")
    where.add_argument("--at-timestamp", metavar="TIME",
                       help="every shard from this time: seconds since the epoch or ISO 8601 (Kinesis)")
    where.add_argument("--sequence", metavar="SHARD=SEQUENCE", action="append",
                       help="resume a shard after this record (repeat for more shards)")
    command.add_argument("--endpoint", default="http://127.0.0.1:9000", help="the broker's API (default %(default)s)")
    command.add_argument("--region", default="us-east-1", help="the region requests are signed for")


def _body(args: argparse.Namespace) -> dict[str, Any] | str:
    """The request, or what is wrong with the arguments."""
    if args.trim_horizon:
        return {"StartingPosition": "TRIM_HORIZON"}
    if args.latest:
        return {"StartingPosition": "LATEST"}
    if args.at_timestamp is not None:
        try:
            seconds = float(args.at_timestamp)
        except ValueError:
            try:
                moment = datetime.datetime.fromisoformat(args.at_timestamp)
            except ValueError:
                return f"--at-timestamp {args.at_timestamp!r} is neither seconds since the epoch nor ISO 8601"
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            seconds = moment.timestamp()
        return {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": seconds}
    sequences: dict[str, str] = {}
    for item in args.sequence:
        shard, sep, sequence = item.partition("=")
        if not sep or not shard or not sequence.isdigit():
            return f"--sequence {item!r} must be SHARD=SEQUENCE (a shard id and a sequence number)"
        sequences[shard] = sequence
    return {"ShardSequenceNumbers": sequences}


def run(args: argparse.Namespace) -> int:
    from broker.aws.api_client import call  # noqa: PLC0415 - botocore only for this command

    if endpoint_refused("rewind", args.endpoint):
        return 2
    body = _body(args)
    if isinstance(body, str):
        print(f"broker rewind: {body}", file=sys.stderr)
        return 2
    url = f"{args.endpoint.rstrip('/')}/broker/v1/mappings/{urllib.parse.quote(args.mapping)}/position"
    try:
        status, answer = call("POST", url, body, region=args.region)
    except OSError as exc:  # connection refused, DNS, timeout
        print(f"broker rewind: cannot reach {args.endpoint}: {exc}", file=sys.stderr)
        return 1
    return said(status, answer)
