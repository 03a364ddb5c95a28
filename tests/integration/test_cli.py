"""The command line as a user runs it: validate, version, run + SIGTERM drain, bad config."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from broker.embedded import RedisServer, free_port
from tests.conftest import broker_settings
from tests.servers import Aws, MotoServer, RecordingTarget, queue_arn

BROKER = [sys.executable, "-m", "broker"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BROKER, *args], capture_output=True, text=True, timeout=60, check=False)


def test_version() -> None:
    """`broker version` prints the version."""
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("broker 0.")


def test_version_flag_and_the_overrides_in_run_help() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("broker 0.")
    helped = run_cli("run", "--help")
    assert "BROKER_REDIS_URL" in helped.stdout
    assert "BROKER_API_PORT" in helped.stdout


def test_the_real_aws_example_validates() -> None:
    """configs/aws.yaml: real AWS, an external Redis, one mapping of each source."""
    env = {**os.environ, "BROKER_REDIS_URL": "rediss://:pw@cache.example.com:6379/0", "BROKER_OPS_SECRET": "s3cret"}
    result = subprocess.run([*BROKER, "validate", "-c", "configs/aws.yaml"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("configs/aws.yaml: ok: 3 function(s), 3 mapping(s) "
                                     "(dynamodb: 1, kinesis: 1, sqs: 1)")


def test_validate_ok_prints_one_line() -> None:
    """The shipped local config validates with a one-line summary."""
    result = run_cli("validate", "-c", "configs/local.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configs/local.yaml: ok: 1 function(s), 3 mapping(s) (dynamodb: 1, kinesis: 1, sqs: 1)"


def test_validate_lists_every_error_without_traceback(tmp_path: Path) -> None:
    """Exit 1, every error with its path, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "broker": {"api": {"host": "127.0.0.1"}},
        "functions": {"f": {"Target": {"Url": "http://t"}, "Timeout": 0}},
        "event_source_mappings": [{"FunctionName": "g", "EventSourceArn": queue_arn("q"), "BatchSize": 50}],
    }))
    result = run_cli("validate", "-c", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{bad}: 3 error(s)"
    assert "  functions.f.Timeout: Input should be greater than or equal to 1" in lines
    assert "  event_source_mappings[0].FunctionName: Function does not exist (g is not declared under functions:)" in lines
    assert any(line.startswith("  event_source_mappings[0].MaximumBatchingWindowInSeconds: Maximum batch window") for line in lines)


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file is a clear error."""
    result = run_cli("run", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "cannot read config file" in result.stderr


async def test_run_then_sigterm_drains(redis_server: RedisServer, moto_server: MotoServer, aws: Aws,
                                       target: RecordingTarget, tmp_path: Path) -> None:
    """`broker run` processes messages, serves /metrics and /readyz, and exits 0 on SIGTERM."""
    url = await aws.create_queue("cli", VisibilityTimeout=30)
    await aws.send(url, "hello")
    port = free_port()
    config = tmp_path / "broker.yaml"
    config.write_text(yaml.safe_dump({
        "broker": broker_settings(redis_server, moto_server, tmp_path, api={"host": "127.0.0.1", "port": port}),
        "functions": {"f": {"Target": {"Url": target.url}, "Timeout": 2}},
        "event_source_mappings": [{"FunctionName": "f", "EventSourceArn": queue_arn("cli")}],
    }))
    log_path = tmp_path / "broker.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([*BROKER, "run", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log_file,
                                env={**os.environ, "BROKER_REPLICA_ID": "replica-under-test"})
    try:
        await target.wait_for(lambda calls: len(calls) >= 1, timeout=30)
        ready = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
        assert json.loads(ready) == {"status": "ready"}
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert 'broker_invocations_total{function="f"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line)["event"] for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert events.index("shutdown_requested") < events.index("broker_stopped")
    assert "batch_invoked" in events
    assert target.bodies() == ["hello"]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def test_errors_say_what_to_do_in_one_line(tmp_path: Path) -> None:
    """A bad BROKER_* variable is named; a YAML error gives file, line and column; a port in use
    names the setting and its variable; none of them prints a traceback."""
    env = {**os.environ, "BROKER_API_PORT": "abc"}
    ok = tmp_path / "ok.yaml"
    ok.write_text("broker: {api: {host: 127.0.0.1}}\n")
    result = subprocess.run([sys.executable, "-m", "broker", "validate", "-c", str(ok)], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert result.returncode == 1
    assert "(set by the environment variable BROKER_API_PORT)" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("broker:\n  api: [\n")
    result = run_cli("validate", "-c", str(bad))
    assert result.returncode == 1
    assert f"{bad} is not valid YAML at line 3, column 1:" in result.stderr
    assert "<unicode string>" not in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = tmp_path / "busy.yaml"
        busy.write_text(f"broker: {{api: {{host: 127.0.0.1, port: {port}}}, redis_url: 'redis://127.0.0.1:1/0'}}\n")
        result = run_cli("run", "-c", str(busy))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"broker: StartupError: broker.api.port: cannot listen on 127.0.0.1:{port}"), last
    assert "BROKER_API_PORT" in last


def test_validate_checks_what_run_would_refuse(tmp_path: Path) -> None:
    """Handler modules that do not import, commands that do not exist, non-HTTP URLs, a drain
    shorter than a long poll."""
    config = tmp_path / "checks.yaml"
    config.write_text(yaml.safe_dump({
        "functions": {"a": {"Target": {"Handler": "no_such_module:handler"}},
                      "b": {"Target": {"Runtime": {"Command": ["no-such-binary"]}}},
                      "c": {"Target": {"Handler": "broker.demo:handler"}}},
    }))
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 1
    assert "functions.a.Target.Handler: cannot import no_such_module" in result.stderr
    assert "functions.b.Target.Runtime.Command: no-such-binary is not an executable" in result.stderr
    assert "functions.c" not in result.stderr
    config.write_text(yaml.safe_dump({
        "broker": {"drain_timeout_seconds": 5, "sqs_wait_time_seconds": 20},
        "functions": {"f": {"Target": {"Url": "ftp://x"}}},
        "event_source_mappings": [{"FunctionName": "f", "EventSourceArn": queue_arn("q")}],
    }))
    result = run_cli("validate", "-c", str(config))
    assert "functions.f.Target.Url: 'ftp://x' is not an http:// or https:// URL with a host" in result.stderr
    assert "broker.drain_timeout_seconds: 5 s is shorter than sqs_wait_time_seconds (20 s)" in result.stderr


def test_run_refuses_what_validate_refuses_in_the_same_words(redis_server: RedisServer, moto_server: MotoServer,
                                                             tmp_path: Path) -> None:
    """A Handler that does not import, a Runtime command that does not exist: `broker run` stops at
    start with validate's own line, instead of restarting environments that fail forever."""
    for name, target in (("a", {"Handler": "no_such_module:handler"}),
                         ("b", {"Runtime": {"Command": ["no-such-binary"]}})):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"broker": broker_settings(redis_server, moto_server, tmp_path),
                                          "functions": {name: {"Target": target}}}))
        validated = run_cli("validate", "-c", str(config))
        ran = run_cli("run", "-c", str(config))
        assert validated.returncode == 1
        assert ran.returncode == 1
        refusal = validated.stderr.strip().splitlines()[-1].strip()
        assert refusal.startswith(f"functions.{name}.Target."), refusal
        assert ran.stderr.strip().splitlines()[-1] == f"broker: StartupError: {refusal}"


def test_in_process_handlers_import_from_the_working_directory_and_warn(redis_server: RedisServer,
                                                                         moto_server: MotoServer, tmp_path: Path) -> None:
    """`broker` (the console script, whose sys.path lacks the working directory) imports an InProcess
    Handler from where it runs, as validate does, and says once that module state is shared."""
    (tmp_path / "myhandlers.py").write_text("def handler(event, context):\n    return {'ok': True}\n")
    config = tmp_path / "inproc.yaml"
    config.write_text(yaml.safe_dump({"broker": broker_settings(redis_server, moto_server, tmp_path),
                                      "functions": {"f": {"Target": {"Handler": "myhandlers:handler",
                                                                     "InProcess": True}}}}))
    script = Path(sys.executable).parent / "broker"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert subprocess.run([str(script), "validate", "-c", str(config)], cwd=tmp_path, env=env, capture_output=True,
                          timeout=60, check=False).returncode == 0
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(script), "run", "-c", str(config)], cwd=tmp_path, env=env, stderr=out,
                                stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while '"broker_started"' not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(d.get("event") == "broker_started" for d in lines), log.read_text()[-2000:]
    warnings = [d for d in lines if d.get("event") == "in_process_handler"]
    assert len(warnings) == 1
    assert "shared" in warnings[0]["note"]
