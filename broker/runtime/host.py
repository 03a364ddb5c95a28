"""A function's Runtime API (2018-06-01; docs/aws-semantics.md, "Runtime API"): one aiohttp app
serving the function's shared port (``Runtime.ApiPort``, for external environments: Lambda container images, any runtime
interface client) and one loopback port per managed environment, so the broker knows which
process holds which invocation. The host is the function's ``Invoker``: an invocation waits for an
environment's ``next`` call and returns what the environment posts back.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import sys
import time
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from broker.batching.envelope import MAX_PAYLOAD_BYTES
from broker.errors import StartupError
from broker.observability.metrics import Metrics
from broker.redis.client import RedisClient
from broker.runtime.bridge import ReplicaBridge
from broker.runtime.dispatch import Dispatcher
from broker.runtime.environments import Environment, error_body
from broker.runtime.processes import ManagedProcess, lambda_environment
from broker.types import InvokeContext, InvokeResult

log = structlog.get_logger("broker.runtime")
MAX_RESPONSE_BYTES = MAX_PAYLOAD_BYTES + 100  # Lambda's 6 MB, with the runtime's framing allowance
MAX_HEADER_BYTES = 2 * 1024 * 1024  # a header line; runtime clients cap theirs at 1 MiB (XRay-Error-Cause)
_PREFIX = "/2018-06-01/runtime"
_RETIRE_CHECK_SECONDS = 5.0


class RuntimeHost:
    def __init__(self, *, function: str, function_arn: str, region: str, metrics: Metrics, host: str,
                 api_port: int | None, command: Sequence[str] | None, handler: str, working_directory: Path,
                 variables: dict[str, str], memory_mb: int, max_environments: int, provisioned: int,
                 idle_seconds: float, init_timeout: float, redis: RedisClient | None = None, replica: str = "") -> None:
        self.function = function
        self._arn = function_arn
        self._region = region
        self._host = host
        self._api_port = api_port
        self._command = list(command) if command else None
        self._handler = handler
        self._cwd = working_directory
        self._variables = variables
        self._memory = memory_mb
        self.dispatcher = Dispatcher(function=function, metrics=metrics, max_environments=max_environments,
                                     provisioned=provisioned, idle_seconds=idle_seconds, init_timeout=init_timeout,
                                     start_process=self._start_process if self._command else None)
        # With a shared port, environments may connect to any replica: invocations go through Redis.
        self._bridge = ReplicaBridge(redis, function=function, replica=replica, dispatcher=self.dispatcher,
                                   init_timeout=init_timeout) if api_port is not None and redis is not None else None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port: int | None = None  # the shared port, once listening

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_RESPONSE_BYTES + 1024 * 1024)
        app.add_routes([
            web.get(f"{_PREFIX}/invocation/next", self._next),
            web.post(f"{_PREFIX}/invocation/{{request_id}}/response", self._response),
            web.post(f"{_PREFIX}/invocation/{{request_id}}/error", self._error),
            web.post(f"{_PREFIX}/init/error", self._init_error),
        ])
        # AWS's runtime clients send a function error's X-Ray cause as a header of up to 1 MiB
        # (awslambdaric drops it only above that); aiohttp's default 8 KiB line limit would refuse
        # the function's answer and make the client exit, losing the error.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5,
                                     max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES)
        await self._runner.setup()
        if self._api_port is not None:
            site = web.TCPSite(self._runner, self._host, self._api_port)
            try:
                await site.start()
            except OSError as exc:
                await self._runner.cleanup()
                raise StartupError(f"functions.{self.function}.Target.Runtime.ApiPort: cannot listen on "
                                   f"{self._host}:{self._api_port} ({exc.strerror or exc}); choose a free port "
                                   "(0 picks one)") from exc
            sockets = getattr(site._server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self._api_port
            log.info("runtime_api_listening", function=self.function, host=self._host, port=self.port,
                     note="external environments: AWS_LAMBDA_RUNTIME_API=<this host>:<port>")
        self.dispatcher.start()
        self._spawn(self._retire_loop())
        if self._bridge is not None:
            self._spawn(self._bridge.run())

    async def aclose(self) -> None:
        if self._bridge is not None:
            self._bridge.stop()
        await self.dispatcher.aclose()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def pending(self) -> int:
        """Invocations waiting for an environment: every replica's (the shared Redis queue) for a
        function with a shared port, else this replica's."""
        if self._bridge is not None:
            return await self._bridge.depth()
        return self.dispatcher.pending

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        """The ``Invoker`` protocol: run once in one of this function's environments (of any replica,
        for a function with a shared port)."""
        if self._bridge is not None:
            failure = self.dispatcher.init_failure()
            if failure is not None:  # this replica's environments fail their init: the runtime's error
                return InvokeResult(failure, "Unhandled")
            self.dispatcher.want_environment()
            return await self._bridge.invoke(payload, ctx, limit_seconds)
        return await self.dispatcher.invoke(payload, ctx, limit_seconds)

    # ------------------------------------------------------------------ managed environments

    def _start_process(self, name: str) -> ManagedProcess:
        """A managed environment: a loopback port of its own, then its process (started in a task)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        key = f"127.0.0.1:{sock.getsockname()[1]}"
        stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
        env = lambda_environment(runtime_api=key, function=self.function, memory_mb=self._memory, region=self._region,
                                 handler=self._handler, task_root=self._cwd, stream=stream, variables=self._variables)
        holder: list[Environment] = []
        assert self._command is not None
        process = ManagedProcess(key, self._command, env, cwd=self._cwd,
                                 on_line=lambda line: self.dispatcher.log_line(holder[0], line) if holder else None,
                                 on_exit=lambda code: self.dispatcher.exited(holder[0], code) if holder else None)
        self._spawn(self._run_process(process, sock, holder))
        log.info("environment_starting", function=self.function, environment=key)
        return process

    async def _run_process(self, process: ManagedProcess, sock: socket.socket, holder: list[Environment]) -> None:
        assert self._runner is not None
        site = web.SockSite(self._runner, sock)
        await site.start()
        holder.append(self.dispatcher.environment(process.key, process))
        try:
            await process.run()
        finally:
            await site.stop()

    async def _retire_loop(self) -> None:
        while True:
            await asyncio.sleep(_RETIRE_CHECK_SECONDS)
            self.dispatcher.retire_idle()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # A fresh context: an environment outlives whichever invocation started it, so its tasks
        # (output relay, bridge) must not carry that caller's log tags.
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the Runtime API

    def _managed_caller(self, request: web.Request) -> Environment | None:
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport else None
        env = self.dispatcher.environments.get(f"127.0.0.1:{local[1]}" if local else "")
        return env if env is not None and env.process is not None else None

    def _caller(self, request: web.Request) -> Environment:
        env = self._managed_caller(request)
        if env is not None:
            return env
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        return self.dispatcher.environment(f"external:{peer[0]}:{peer[1]}" if peer else "external:?")

    async def _next(self, request: web.Request) -> web.StreamResponse:
        env = self._caller(request)
        transport = request.transport
        inv = await self.dispatcher.next(env, alive=lambda: transport is not None and not transport.is_closing())
        if inv is None:
            return _runtime_error(500, "Runtime.Unavailable", "no invocation: the environment is being stopped")
        ctx = inv.ctx
        headers = {
            "Lambda-Runtime-Aws-Request-Id": ctx.request_id,
            "Lambda-Runtime-Deadline-Ms": str(ctx.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": ctx.function_arn,
            "Lambda-Runtime-Trace-Id": ctx.trace_id or _trace_id(),
        }
        if ctx.client_context:
            headers["Lambda-Runtime-Client-Context"] = ctx.client_context
        if ctx.cognito_identity:
            headers["Lambda-Runtime-Cognito-Identity"] = ctx.cognito_identity
        return web.Response(body=inv.payload, headers=headers, content_type="application/json")

    async def _flush(self, request: web.Request) -> None:
        """A managed environment's lines printed before this call go to the invocation it answers."""
        env = self._managed_caller(request)
        if env is not None and env.process is not None:
            await env.process.flush_output()

    async def _response(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        body = await request.read()
        await self._flush(request)
        if len(body) > MAX_RESPONSE_BYTES:
            self.dispatcher.error(request_id, error_body("Function.ResponseSizeTooLarge",
                                                    f"Response payload size ({len(body)} bytes) exceeded maximum "
                                                    f"allowed payload size ({MAX_RESPONSE_BYTES - 100} bytes)."))
            return _runtime_error(413, "RequestEntityTooLarge", "the response exceeds 6 MB")
        if not self.dispatcher.respond(request_id, body):
            return _runtime_error(400, "InvalidRequestID", f"no invocation {request_id} is in flight here")
        return web.json_response({"status": "OK"}, status=202)

    async def _error(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        body = await request.read()
        await self._flush(request)
        if not self.dispatcher.error(request_id, body or error_body("Runtime.Unknown", "")):
            return _runtime_error(400, "InvalidRequestID", f"no invocation {request_id} is in flight here")
        return web.json_response({"status": "OK"}, status=202)

    async def _init_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        await self._flush(request)
        error_type = request.headers.get("Lambda-Runtime-Function-Error-Type", "Runtime.Unknown")
        self.dispatcher.init_error(self._caller(request), body or error_body(error_type, "init failed"))
        return web.json_response({"status": "OK"}, status=202)


def handler_command(handler: str) -> list[str]:
    """A ``module:function`` Handler run by the AWS Python runtime interface client."""
    return [sys.executable, "-m", "awslambdaric", handler.replace(":", ".")]


def handler_variables(working_directory: Path) -> dict[str, str]:
    """A Handler's modules import from the broker's working directory, as they did in process."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{working_directory}{os.pathsep}{path}" if path else str(working_directory)}


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _runtime_error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"errorType": error_type, "errorMessage": message}, status=status)
