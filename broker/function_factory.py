"""Builds each configured function: its invoker (an HTTP target, a real Lambda function, an
in-process Python handler, or execution environments) wrapped in a ``Function`` that accounts for
every invocation under the concurrency permits. Execution environments (``RuntimeHost``) are owned
here until the function is rebuilt or the broker stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from pathlib import Path

import aiohttp
import structlog

from broker.arns import function_arn
from broker.aws.clients import AwsClients
from broker.clock import Clock
from broker.concurrency.permits import Permits
from broker.config import preflight
from broker.config.models import Config, FunctionConfig
from broker.errors import StartupError
from broker.invoking.aws_lambda import LambdaInvoker
from broker.invoking.function import Function, Invoker
from broker.invoking.http import HttpInvoker
from broker.invoking.python import PythonInvoker, load_handler
from broker.observability.metrics import Metrics
from broker.redis.client import RedisClient
from broker.runtime.host import RuntimeHost, handler_command, handler_variables

log = structlog.get_logger("broker.app")


class FunctionFactory:
    def __init__(self, *, config: Callable[[], Config], aws: AwsClients, http: aiohttp.ClientSession,
                 redis: RedisClient, metrics: Metrics, clock: Clock, permits: Permits | None, replica: str,
                 runtimes: MutableMapping[str, RuntimeHost]) -> None:
        self._config = config
        self._aws = aws
        self._http = http
        self._redis = redis
        self._metrics = metrics
        self._clock = clock
        self._permits = permits
        self._replica = replica
        self.runtimes = runtimes  # function name -> its execution environments

    async def build(self, name: str, fn: FunctionConfig) -> Function:
        target = fn.Target
        invoker: Invoker
        issues = await asyncio.to_thread(preflight.check_function, name, fn)
        if issues:  # what `broker validate` refuses, in its words
            raise StartupError(str(issues[0]))
        if target.Url:
            invoker = HttpInvoker(target.Url, self._http)
        elif target.Handler and target.InProcess:
            invoker = PythonInvoker(load_handler(target.Handler))
            log.warning("in_process_handler", function=name, handler=target.Handler,
                        note="InProcess: true runs the handler in the broker's process: module-level state "
                             "(a Powertools BatchProcessor, globals) is shared by concurrent invocations; "
                             "leave InProcess out to run it in execution environments")
        elif target.Handler or target.Runtime:
            invoker = await self._start_runtime(name, fn)
        else:
            assert target.Lambda is not None
            invoker = LambdaInvoker(await self._aws.client("lambda", endpoint_url=target.EndpointUrl), target.Lambda)
        settings = self._config().broker
        return Function(name=name, arn=function_arn(settings.region, settings.account_id, name),
                        timeout=fn.Timeout, invoker=invoker, metrics=self._metrics, clock=self._clock,
                        permits=self._permits)

    async def remove(self, name: str) -> None:
        """The function is gone from the config: its environments stop."""
        host = self.runtimes.pop(name, None)
        if host is not None:
            await host.aclose()

    async def aclose(self) -> None:
        for name in list(self.runtimes):
            await self.remove(name)

    async def _start_runtime(self, name: str, fn: FunctionConfig) -> RuntimeHost:
        """Execution environments for a Runtime target, or awslambdaric ones for a Handler."""
        s = self._config().broker
        spec = fn.Target.Runtime
        if spec is None:  # a Handler: the AWS Python runtime client runs it, one invocation per process
            assert fn.Target.Handler is not None
            cwd = Path.cwd()
            command: list[str] | None = handler_command(fn.Target.Handler)
            handler, api_port = fn.Target.Handler.replace(":", "."), None
            variables = {**handler_variables(cwd), **fn.Environment.Variables}
        else:
            cwd = (spec.WorkingDirectory or Path.cwd()).resolve()
            command, handler, api_port = spec.Command, (spec.Command or ["external"])[-1], spec.ApiPort
            variables = {**fn.Environment.Variables, **spec.Environment.Variables}
        reserved = fn.ReservedConcurrentExecutions
        host = RuntimeHost(
            function=name, function_arn=function_arn(s.region, s.account_id, name), region=s.region,
            metrics=self._metrics, host=s.api.host, api_port=api_port, command=command, handler=handler,
            working_directory=cwd, variables=variables, memory_mb=fn.MemorySize,
            max_environments=min(s.runtime_max_environments, reserved) if reserved else s.runtime_max_environments,
            provisioned=fn.ProvisionedConcurrencyConfig.ProvisionedConcurrentExecutions
            if fn.ProvisionedConcurrencyConfig else 0,
            idle_seconds=s.runtime_idle_seconds, init_timeout=s.runtime_init_timeout_seconds,
            redis=self._redis, replica=self._replica)
        await host.start()
        await self.remove(name)  # the function's previous environments (a changed config)
        self.runtimes[name] = host
        return host
