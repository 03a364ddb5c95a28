"""Managed execution environments: one process each, started with Lambda's environment variables,
its output turned into log lines, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger("broker.runtime")
_STOP_GRACE_SECONDS = 2.0
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
        self._proc: asyncio.subprocess.Process | None = None
        self._killed = False

    async def run(self) -> None:
        """Start the process, relay its output, report its exit."""
        code: int | None = None
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command, env=self._env, cwd=self._cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            if self._killed:
                self.kill()
            assert self._proc.stdout is not None
            async for line in self._proc.stdout:
                self._on_line(line.decode("utf-8", "replace"))
            code = await self._proc.wait()
        except OSError as exc:
            log.error("environment_start_failed", environment=self.key, command=self._command[0], error=str(exc))
        finally:
            self._on_exit(code)

    def kill(self) -> None:
        self._killed = True
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)  # the runtime and anything it started

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        self._killed = True
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), _STOP_GRACE_SECONDS)
        except TimeoutError:
            self.kill()
