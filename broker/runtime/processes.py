"""Managed execution environments: one process each, started with Lambda's environment variables,
its output turned into log lines, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger("broker.runtime")
_STOP_GRACE_SECONDS = 2.0
_FLUSH_LIMIT_SECONDS = 0.05  # a runtime that keeps printing after its answer does not hold the answer back
# What a function's process inherits from the broker's environment (Lambda gives a clean one):
# the search paths, and the AWS credentials the SDKs find the usual way (IRSA, keys, profiles).
_INHERITED = ("PATH", "HOME", "PYTHONPATH", "LANG", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_ENDPOINT_URL")


def lambda_environment(*, runtime_api: str, function: str, memory_mb: int, region: str, handler: str,
                       task_root: Path, stream: str, variables: Mapping[str, str]) -> dict[str, str]:
    """The variables Lambda sets in an execution environment, then the function's own."""
    inherited = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("AWS_ENDPOINT_URL_")}
    return {
        **inherited,
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(task_root),
        "TZ": ":UTC",
        **variables,
    }


class _Output(asyncio.Protocol):
    """The process's output pipe, cut into lines as it is read (on the loop, synchronously): once the
    pipe holds no unread byte, every line written so far has reached ``on_line``."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._partial = b""
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._on_line(line.decode("utf-8", "replace") + "\n")

    def flush_partial(self) -> None:
        if self._partial:
            line, self._partial = self._partial, b""
            self._on_line(line.decode("utf-8", "replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.flush_partial()
        if not self.closed.done():
            self.closed.set_result(None)


class _Exit(asyncio.SubprocessProtocol):
    def __init__(self) -> None:
        self.exited = asyncio.get_running_loop().create_future()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class ManagedProcess:
    """One environment's process. ``key`` is its Runtime API address (its own loopback port)."""

    def __init__(self, key: str, command: Sequence[str], env: Mapping[str, str], *, cwd: Path,
                 on_line: Callable[[str], None], on_exit: Callable[[int | None], None]) -> None:
        self.key = key
        self._command = list(command)
        self._env = dict(env)
        self._cwd = cwd
        self._on_line = on_line
        self._on_exit = on_exit
        self._transport: asyncio.SubprocessTransport | None = None
        self._exit: _Exit | None = None
        self._output: _Output | None = None
        self._read_fd: int | None = None
        self._killed = False

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None else None

    async def run(self) -> None:
        """Start the process, relay its output, report its exit. The output pipe is the broker's own
        (not the event loop's), so its unread bytes can be counted on any loop (uvloop too)."""
        code: int | None = None
        read_fd, write_fd = os.pipe()
        try:
            loop = asyncio.get_running_loop()
            try:
                self._transport, self._exit = await loop.subprocess_exec(
                    _Exit, *self._command, env=self._env, cwd=self._cwd, stdin=subprocess.DEVNULL,
                    stdout=write_fd, stderr=write_fd, start_new_session=True)
            finally:
                os.close(write_fd)  # the child holds its copy: the pipe ends when the process (tree) does
            self._read_fd = read_fd
            _, self._output = await loop.connect_read_pipe(lambda: _Output(self._on_line),
                                                           os.fdopen(read_fd, "rb", buffering=0))
            if self._killed:
                self.kill()
            await self._output.closed
            await self._exit.exited
            code = self._transport.get_returncode()
            self._transport.close()
        except OSError as exc:
            if self._output is None:
                os.close(read_fd)
            log.error("environment_start_failed", environment=self.key, command=self._command[0], error=str(exc))
        finally:
            self._on_exit(code)

    async def flush_output(self) -> None:
        """Wait (briefly) until what the process wrote so far has been read and passed on as lines:
        a runtime prints, then posts its answer, so its lines belong to the invocation it answers."""
        output, fd = self._output, self._read_fd
        if output is None or fd is None or output.closed.done():
            return
        deadline = time.monotonic() + _FLUSH_LIMIT_SECONDS
        while time.monotonic() < deadline:
            try:
                unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                break
            if unread == 0:
                break
            await asyncio.sleep(0)  # the loop reads the pipe and hands the lines over
        output.flush_partial()

    def kill(self) -> None:
        self._killed = True
        pid = self.pid
        if pid is not None and self._transport is not None and self._transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the runtime and anything it started

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        self._killed = True
        pid, exit_ = self.pid, self._exit
        if pid is None or exit_ is None or self._transport is None or self._transport.get_returncode() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exit_.exited), _STOP_GRACE_SECONDS)
        except TimeoutError:
            self.kill()
