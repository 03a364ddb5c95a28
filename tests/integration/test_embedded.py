"""The quick start's embedded mode as a newcomer meets it: the demo feeds and maps SQS, Kinesis
and DynamoDB Streams; a second broker on the same data_dir is refused; SIGHUP drains; the embedded
redis-server never outlives the broker, even on SIGKILL; a restart starts from a fresh emulator and
fresh state, so nothing is skipped or repeated."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from broker.embedded import free_port
from tests.integration.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp: Path) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    doc["broker"].update({"data_dir": str(tmp / "data"), "api": {"host": "127.0.0.1", "port": free_port()},
                          "embedded_aws_port": free_port(), "log_format": "json", "sqs_wait_time_seconds": 1,
                          "drain_timeout_seconds": 5, "kinesis_poll_interval_seconds": 0.2})
    doc["local"]["producer"]["interval_seconds"] = 0.5
    path = tmp / "local.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))


def _handled(log: Path) -> collections.Counter[str]:
    """Records the demo handler got, by source."""
    counts: collections.Counter[str] = collections.Counter()
    for n, source in re.findall(r"demo handler: (\d+) record\(s\) from aws:(\w+)", log.read_text()):
        counts[source] += int(n)
    return counts


def _redis_of(data: Path) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd") == str((data / "redis").resolve()):
                    pids.append(int(pid))
            except OSError:
                continue
    return pids


async def test_quick_start_lifecycle(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first_log = tmp_path / "first.log"
    first = _start(config, first_log)
    try:
        await wait_until(lambda: set(_handled(first_log)) >= {"sqs", "kinesis", "dynamodb"}, timeout=90)
        assert _redis_of(tmp_path / "data")
        second = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "broker", "run", "-c", str(config)],
                                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
        assert second.returncode == 1
        assert "another broker is running on data_dir" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGHUP)  # the terminal closed
        assert await asyncio.to_thread(first.wait, 30) == 0
        assert "shutdown_requested" in first_log.read_text()
        await wait_until(lambda: not _redis_of(tmp_path / "data"), timeout=10)
    finally:
        if first.poll() is None:
            first.kill()

    second_log = tmp_path / "second.log"
    again = _start(config, second_log)
    try:
        await wait_until(lambda: set(_handled(second_log)) >= {"sqs", "kinesis", "dynamodb"}, timeout=90)
        await asyncio.sleep(3)
        text = second_log.read_text()
        assert "embedded_redis_reset" in text  # fresh emulator, fresh state: no checkpoint from the first run
        sent = len(re.findall(r'"event": "demo_sent"', text))
        handled = _handled(second_log)
        # every click and cart of this run arrives once: none skipped (beyond the last in flight), none repeated
        for source in ("kinesis", "dynamodb"):
            assert sent - 3 <= handled[source] <= sent, (source, handled, sent)
        os.kill(again.pid, signal.SIGKILL)  # a crash: the embedded redis-server must not be orphaned
        again.wait(10)
        started = time.monotonic()
        await wait_until(lambda: not _redis_of(tmp_path / "data"), timeout=10)
        print(f"embedded: redis-server gone {time.monotonic() - started:.2f} s after SIGKILL of the broker")
    finally:
        if again.poll() is None:
            again.kill()
