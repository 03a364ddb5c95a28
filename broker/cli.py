"""``broker run|validate|version|quarantine|rewind|status`` and ``broker --version``."""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import signal
import sys
import traceback
from typing import Any

from broker import __version__, redaction
from broker.arns import source_kind
from broker.commands import quarantine as quarantine_command
from broker.commands import rewind as rewind_command
from broker.commands import status as status_command
from broker.errors import BrokerError, ConfigError, describe, leaf_errors


def _overrides() -> str:
    """``run --help``'s list of the environment variables that override ``broker:`` settings."""
    from broker.config.models import BrokerSettings  # noqa: PLC0415

    names = [f"BROKER_{f.upper()}" for f in BrokerSettings.model_fields if f != "api"]
    names[1:1] = ["BROKER_API_HOST", "BROKER_API_PORT"]
    return ("environment: every broker: setting can be overridden by BROKER_<SETTING> (the value is read "
            "as YAML), e.g. BROKER_REDIS_URL=rediss://... BROKER_API_PORT=9000. The variables: "
            + ", ".join(names) + ".")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker", description=(
        "Lambda's event source mappings and asynchronous invocation, self-hosted."))
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run pollers, workers and the HTTP API until SIGTERM", epilog=_overrides())
    run.add_argument("-c", "--config", required=True, help="config file (YAML)")
    validate = sub.add_parser("validate", help="check a config file and exit")
    validate.add_argument("-c", "--config", required=True, help="config file (YAML)")
    sub.add_parser("version", help="print the version")
    quarantine_command.add_parser(sub)
    rewind_command.add_parser(sub)
    status_command.add_parser(sub)
    return parser


_API_COMMANDS = {"quarantine": quarantine_command.run, "rewind": rewind_command.run, "status": status_command.run}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"broker {__version__}")
        return 0
    if args.command in _API_COMMANDS:
        return _API_COMMANDS[args.command](args)
    from broker.config import load_config  # noqa: PLC0415 - keep `broker version` instant

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.issues)} error(s)", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {redaction.scrub(str(issue))}", file=sys.stderr)
        return 1
    if args.command == "validate":
        from broker.config import preflight  # noqa: PLC0415

        found = preflight.check(config)
        if found:
            print(f"{args.config}: {len(found)} error(s)", file=sys.stderr)
            for issue in found:
                print(f"  {redaction.scrub(str(issue))}", file=sys.stderr)
            return 1

        kinds = collections.Counter(source_kind(m.EventSourceArn).value for m in config.event_source_mappings)
        by_source = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        print(f"{args.config}: ok: {len(config.functions)} function(s), "
              f"{len(config.event_source_mappings)} mapping(s)" + (f" ({by_source})" if by_source else ""))
        return 0
    return _run(config, args.config)


def _event_loop_runner() -> Any:
    """uvloop where it is installed (about twice aiohttp's request rate), else asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        return asyncio.run
    return uvloop.run


def _run(config: object, path: str) -> int:
    from broker.app import App  # noqa: PLC0415
    from broker.config.models import Config  # noqa: PLC0415
    from broker.observability.logging import configure_logging, get_logger  # noqa: PLC0415

    assert isinstance(config, Config)
    configure_logging(config.broker.log_level, config.broker.log_format)
    log = get_logger("broker.cli")

    async def serve() -> None:
        app = App(config, config_path=path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # closing the terminal drains too
            loop.add_signal_handler(sig, app.request_stop)
        running = asyncio.ensure_future(app.run())
        started = asyncio.ensure_future(app.started.wait())
        await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            # What start-up built (botocore's models, pydantic's validators, the config) lives as long
            # as the process: out of the collector's reach, a full collection scans only what came
            # since. Before, one took 35-46 ms every few seconds under load: the 202's p99.
            gc.freeze()
        else:
            started.cancel()
        await running

    try:
        _event_loop_runner()(serve())
    except Exception as exc:  # a bad config, a missing resource at start-up, or a bug: name it, last
        errors = leaf_errors(exc)
        for error in errors:
            if not isinstance(error, BrokerError):  # a bug: its traceback is for the report
                print(redaction.scrub("".join(traceback.format_exception(error))), file=sys.stderr)
        log.error("broker_failed", error=describe(errors))
        print(f"broker: {redaction.scrub(describe(errors))}", file=sys.stderr)
        return 1
    return 0
