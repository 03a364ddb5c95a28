"""The composition root: builds every component from the config and runs them.

Start: embedded servers (if configured) → Redis and AWS clients → functions → local demo
resources → mappings (each checked against its queue) → HTTP API → run.
Stop (SIGTERM): /readyz fails → sources stop taking work → in-flight batches drain for up to
``drain_timeout_seconds`` → the rest is cancelled → clients and embedded servers close.
Only this module knows every concrete class.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from broker import __version__, account, demo
from broker.api import concurrency as concurrency_api
from broker.api import functions as functions_api
from broker.api import health, mappings, server
from broker.api import invoke as invoke_api
from broker.api import invoke_config as invoke_config_api
from broker.api.auth import SigV4
from broker.arns import source_kind
from broker.async_invoke.invoke_config import InvokeConfigStore
from broker.async_invoke.queue import AsyncQueue
from broker.async_invoke.worker import AsyncSettings, AsyncWorker
from broker.aws.clients import AwsClients
from broker.clock import Clock, SystemClock
from broker.concurrency.permits import Permits
from broker.concurrency.reservations import Reservations
from broker.config.changes import changes
from broker.config.models import Config, EventSourceMapping, FunctionConfig
from broker.config.watch import ConfigWatcher
from broker.control.follower import RegistryFollower
from broker.control.registry import MappingRegistry
from broker.control.service import MappingService
from broker.destinations.lambda_route import LambdaDestinations
from broker.destinations.sender import DestinationSender
from broker.embedded import start_embedded_aws, start_embedded_redis
from broker.errors import BrokerError, StartupError
from broker.function_factory import FunctionFactory
from broker.invoking.function import Function
from broker.observability import gauges, readiness
from broker.observability.metrics import Metrics
from broker.redis import client as redis_client
from broker.redis.pipeline import AutoPipeline
from broker.redis.state import Heartbeat
from broker.running import RunningFunction, RunningMapping, View
from broker.runtime.host import RuntimeHost
from broker.sources.factory import SourceFactory
from broker.sources.mapping import MappingRunner, Source
from broker.sources.streams.types import PrefetchBudget
from broker.types import SourceKind

log = structlog.get_logger("broker.app")


class App:
    def __init__(self, config: Config, *, clock: Clock | None = None, metrics: Metrics | None = None,
                 config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.replica_id = config.broker.replica_id or socket.gethostname()
        self._running_functions: dict[str, RunningFunction] = {}
        self._running_mappings: dict[str, RunningMapping] = {}
        fns, maps = self._running_functions, self._running_mappings
        self.functions: View[RunningFunction, Function] = View(fns, lambda r: r.function)
        self.queues: View[RunningFunction, AsyncQueue] = View(fns, lambda r: r.queue)
        self.invokables: View[RunningFunction, invoke_api.Invokable] = View(fns, lambda r: r.invokable)
        self._workers: View[RunningFunction, AsyncWorker] = View(fns, lambda r: r.worker)
        self.runners: View[RunningMapping, MappingRunner] = View(maps, lambda r: r.runner)
        self.kinds: View[RunningMapping, SourceKind] = View(maps, lambda r: r.kind)
        self.api_port: int | None = None
        self.started = asyncio.Event()
        self._started_at = self.clock.time()
        self._stopping = asyncio.Event()
        self._draining = False
        self._redis: Any = None
        self._heartbeat: Heartbeat | None = None
        self._pipeline: AutoPipeline | None = None
        self.reservations: Reservations | None = None
        self._prefetch = PrefetchBudget(config.broker.stream_prefetch_max_mib * 1024 * 1024)
        self._aws: AwsClients | None = None
        self._sender: DestinationSender | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}  # "mapping:<uuid>" / "worker:<name>" -> task
        self._group: asyncio.TaskGroup | None = None
        self._permits: Permits | None = None
        self.runtimes: dict[str, RuntimeHost] = {}  # execution environments of Runtime and Handler targets
        self._registry: MappingRegistry | None = None
        self._sources: SourceFactory | None = None
        self._factory: FunctionFactory | None = None
        self.control: MappingService | None = None
        self._follower: RegistryFollower | None = None
        self._auth: SigV4 | None = None
        self.http_app: web.Application | None = None  # the API, once built

    def request_stop(self) -> None:
        """Begin graceful shutdown (SIGTERM)."""
        if not self._stopping.is_set():
            log.info("shutdown_requested")
            self._draining = True
            self._stopping.set()

    async def run(self) -> None:
        settings = self.config.broker
        async with contextlib.AsyncExitStack() as stack:
            embedded_redis, embedded_aws = settings.redis_url == "embedded", settings.aws_endpoint_url == "embedded"
            redis_url = start_embedded_redis(settings, stack) if embedded_redis else settings.redis_url
            endpoint = await start_embedded_aws(settings, stack) if embedded_aws else settings.aws_endpoint_url
            self._redis = await stack.enter_async_context(redis_client.connected(redis_url))
            self._heartbeat = Heartbeat(
                self._redis, replica=self.replica_id, version=__version__, started=self._started_at,
                interval=settings.heartbeat_interval_seconds, mappings=lambda: list(self.runners),
                on_lost=self.metrics.state_lost.labels("redis").inc)
            self._pipeline = AutoPipeline(self._redis)  # hot paths (permits, async queues) batch their commands
            stack.push_async_callback(self._pipeline.aclose)
            self.reservations = Reservations(self._redis, lambda: self.config.functions,
                                             lambda: self.config.broker.account_concurrency)
            await self.reservations.refresh()
            self._permits = Permits(self._redis, self.reservations.pool, clock=self.clock, replica=self.replica_id,
                                    ttl_seconds=settings.permit_ttl_seconds, pipeline=self._pipeline)
            self._aws = AwsClients(region=settings.region, endpoint_url=endpoint,
                                   max_pool_connections=min(settings.sqs_max_pollers + 50, 1000))
            stack.push_async_callback(self._aws.aclose)
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=None))
            stack.push_async_callback(http.close)
            lambdas = LambdaDestinations(aws=self._aws, account=lambda: self.config.broker.account_id,
                                         local=self._local_enqueue)
            self._sender = DestinationSender(self._aws, lambda_delivery=lambdas.deliver)
            self._sources = SourceFactory(
                config=lambda: self.config, aws=self._aws, redis=self._redis, pipeline=self._pipeline,
                sender=self._sender, metrics=self.metrics, clock=self.clock, replica=self.replica_id,
                prefetch=self._prefetch, stopping=self._stopping)
            api_socket = server.bind(settings.api)  # a taken port ends start-up at once
            stack.callback(api_socket.close)
            self.api_port = api_socket.getsockname()[1]
            settings.account_id = await account.resolve(self.config, self._aws, self._sources.when_reachable,
                                                        api_socket)
            self._registry = MappingRegistry(self._redis)
            self._follower = RegistryFollower(
                self._registry, runners=self.runners, functions=lambda: self.functions,
                file_uuids=lambda: {m.UUID or "" for m in self.config.event_source_mappings},
                start=self._start_api_mapping, stop=self._drop_mapping)
            self.control = MappingService(
                registry=self._registry, functions=lambda: self.config.functions,
                file_mappings=lambda: {m.UUID or "": m for m in self.config.event_source_mappings},
                probe=self._sources.check, apply=self._apply_api_mappings, account=settings.account_id)
            self._factory = FunctionFactory(
                config=lambda: self.config, aws=self._aws, http=http, redis=self._redis, metrics=self.metrics,
                clock=self.clock, permits=self._permits, replica=self.replica_id, runtimes=self.runtimes)
            stack.push_async_callback(self._factory.aclose)  # after the drain: environments stop last
            for name, fn in self.config.functions.items():
                await self._add_function(name, fn)
            # The API (and /healthz) answers while the sources are checked: a slow or unreachable
            # AWS at start-up shows as not ready, not as a pod that never starts.
            runner = await self._start_api(api_socket)
            stack.push_async_callback(runner.cleanup)
            local, aws = self.config.local, self._aws
            if local:
                await self._sources.when_reachable("embedded demo resources",
                                                   lambda: demo.create_resources(aws, local))
            for esm in self.config.event_source_mappings:
                await self._add_mapping(esm)
            if not self._stopping.is_set():
                await self._serve()

    # ------------------------------------------------------------------ start-up

    async def _apply_api_mappings(self) -> None:
        """Follow the registry now (also every second): what API mappings this replica runs."""
        if self._follower is not None and self._group is not None and not self._stopping.is_set():
            await self._follower.apply()

    async def _start_api_mapping(self, esm: EventSourceMapping, last_modified: float) -> None:
        await self._add_mapping(esm, from_api=True)
        assert esm.UUID is not None
        self.runners[esm.UUID].last_modified = last_modified
        self._spawn(f"mapping:{esm.UUID}", self.runners[esm.UUID].run())

    async def _drop_mapping(self, uuid_: str) -> None:
        if uuid_ in self.runners:
            await self._stop_tasks([f"mapping:{uuid_}"])
            self._running_mappings.pop(uuid_, None)

    async def _refresh_gauges(self) -> None:
        permits = self._permits
        if permits is not None:
            await gauges.refresh(self.metrics, runtimes=self.runtimes, functions=list(self.functions),
                                 limit=lambda name: permits.pool(name).limit, in_use=permits.in_use)

    async def _add_mapping(self, esm: EventSourceMapping, *, from_api: bool = False) -> None:
        kind = source_kind(esm.EventSourceArn)
        function = self.functions[esm.FunctionName]
        assert self._sources is not None
        source: Source = await self._sources.build(esm, function, kind)
        runner = MappingRunner(esm, source, function_arn=function.arn, metrics=self.metrics,
                               clock=self.clock, from_api=from_api)
        assert esm.UUID is not None
        self._running_mappings[esm.UUID] = RunningMapping(runner, kind)

    async def _start_api(self, api_socket: socket.socket) -> web.AppRunner:
        s = self.config.broker
        self._auth = server.authenticator(s.api, region=s.region, account=s.account_id, clock=self.clock,
                                          metrics=self.metrics)
        app = web.Application(client_max_size=7 * 1024 * 1024, middlewares=server.middlewares(self._auth))
        app.add_routes(health.routes(self.metrics.registry, self.readiness_problems, self._refresh_gauges))
        assert self.control is not None
        assert self._follower is not None
        app.add_routes(mappings.routes(self.runners, self.kinds, region=s.region, account=s.account_id,
                                       functions=lambda: self.config.functions, control=self.control,
                                       runs=self._follower.runs))
        app.add_routes(invoke_api.routes(self.invokables, self.metrics, region=s.region, account=s.account_id))
        app.add_routes(invoke_config_api.routes(self.invokables, region=s.region, account=s.account_id))
        assert self.reservations is not None
        app.add_routes(concurrency_api.routes(self.functions, self.reservations, region=s.region, account=s.account_id,
                                              account_limit=lambda: self.config.broker.account_concurrency))
        app.add_routes(functions_api.routes(lambda: self.config.functions, self.reservations.reserved, self._redis,
                                            region=s.region, account=s.account_id,
                                            started=self._started_at))
        self.http_app = app
        runner = await server.listen(app, api_socket)
        log.info("api_listening", host=s.api.host, port=self.api_port, version=__version__)
        return runner

    # ------------------------------------------------------------------ running

    async def _serve(self) -> None:
        drain = self.config.broker.drain_timeout_seconds
        async with asyncio.TaskGroup() as group:
            self._group = group
            for uuid_, runner in self.runners.items():
                self._spawn(f"mapping:{uuid_}", runner.run())
            for name in self.functions:
                self._start_worker(name)
            s = self.config.broker
            assert self.reservations is not None
            assert self._heartbeat is not None
            background = [group.create_task(self._periodic(s.heartbeat_interval_seconds, self._heartbeat.beat),
                                            name="heartbeat"),
                          group.create_task(self._periodic(1.0, self.reservations.refresh), name="reservations"),
                          group.create_task(self._periodic(1.0, self._apply_api_mappings), name="api-mappings")]
            if self.config_path is not None:
                watcher = ConfigWatcher(self.config_path, on_failure=self.metrics.config_reload_failures.inc,
                                        also=lambda: [c.SecretAccessKeyFile for c in self.config.broker.api.credentials
                                                      if c.SecretAccessKeyFile is not None])
                background.append(group.create_task(self._periodic(
                    s.config_reload_interval_seconds, functools.partial(watcher.check, self._reload)),
                    name="config-watcher"))
            local = self.config.local
            if local and local.producer:
                assert self._aws is not None
                background.append(group.create_task(demo.produce(self._aws, local.producer, self.clock),
                                                    name="demo-producer"))
            await self._apply_api_mappings()  # the registry's mappings run (and are known) from the start
            self.started.set()
            log.info("broker_started", mappings=len(self.runners), functions=len(self.functions),
                     replica=self.replica_id)
            await self._stopping.wait()
            for task in background:
                task.cancel()
            for runner in self.runners.values():
                runner.stop()
            for worker in self._workers.values():
                worker.stop()
            tasks = list(self._tasks.values())
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=drain)
                for task in pending:
                    log.warning("drain_timeout", task=task.get_name(), drain_timeout_seconds=drain)
                    task.cancel()
        log.info("broker_stopped")

    async def _periodic(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        """``step()`` every ``seconds`` until shutdown. The loop watches the stop flag itself:
        redis-py can swallow a cancellation that lands inside one of its calls (redis-py #2028),
        and a background task that ignored its cancel would hold the shutdown forever."""
        while not self._stopping.is_set():
            await step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    def _spawn(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(work, name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)

    async def _add_function(self, name: str, fn: FunctionConfig) -> None:
        assert self._redis is not None
        assert self._factory is not None
        function = await self._factory.build(name, fn)
        queue = AsyncQueue(self._redis, name, self._pipeline)
        from_file = fn.EventInvokeConfig if "EventInvokeConfig" in fn.model_fields_set else None
        store = InvokeConfigStore(self._redis, name, from_file, clock=self.clock, loaded_at=self.clock.time())
        self._running_functions[name] = RunningFunction(function, queue, invoke_api.Invokable(function, queue, store))

    def _start_worker(self, name: str) -> None:
        assert self._sender is not None
        assert self.reservations is not None
        s = self.config.broker
        settings = AsyncSettings(retry_delays_seconds=tuple(s.async_retry_delays_seconds),
                                 backoff_base_seconds=s.retry_backoff_base_seconds,
                                 backoff_max_seconds=s.retry_backoff_max_seconds, concurrency=s.async_concurrency,
                                 claim_idle_seconds=s.async_claim_idle_seconds)
        running = self._running_functions[name]
        worker = AsyncWorker(function=running.function, config=self.config.functions[name],
                             queue=running.queue, invoke_config=running.invokable.invoke_config,
                             reserved=functools.partial(self.reservations.reserved, name),
                             sender=self._sender, metrics=self.metrics, clock=self.clock,
                             settings=settings, consumer=self.replica_id)
        running.worker = worker
        self._spawn(f"worker:{name}", worker.run())

    # ------------------------------------------------------------------ live reload

    async def _reload(self, new: Config) -> None:
        """Apply a changed, valid config file (``config.changes`` says what changed). A function that
        cannot be built is left out, said in the log, and its mappings wait for the next reload."""
        if self._auth is not None and new.broker.api.authenticated:  # API keys and their files, applied live
            self._auth.rotate(new.broker.api)
        change = changes(self.config, new)
        if change.restart_required:
            log.warning("config_reload_restart_required", settings=change.restart_required)
        await self._stop_tasks([f"mapping:{u}" for u in change.stopped_mappings]
                               + [f"worker:{n}" for n in change.functions])
        for u in change.stopped_mappings:
            self._running_mappings.pop(u, None)
        self.config = new
        for name in change.functions:
            self._running_functions.pop(name, None)
            if name not in new.functions:
                if self._factory is not None:
                    await self._factory.remove(name)
                continue
            try:
                await self._add_function(name, new.functions[name])
            except BrokerError as exc:
                self.metrics.config_reload_failures.inc()
                log.error("function_not_started", function=name, error=str(exc))
                continue
            self._start_worker(name)
        for esm in new.event_source_mappings:
            u = esm.UUID or ""
            if u in self.runners:
                self.runners[u].file_changed_enabled(esm.Enabled)  # a pause made through the API survives
                continue
            try:
                if esm.FunctionName not in self.functions:
                    raise StartupError(f"function {esm.FunctionName} is not running (see function_not_started)")
                await self._add_mapping(esm)
            except BrokerError as exc:
                log.error("mapping_not_started", mapping=u, error=str(exc))
                continue
            self._spawn(f"mapping:{u}", self.runners[u].run())
        log.info("config_reloaded", mappings=len(self.runners), functions=len(self.functions),
                 restarted_mappings=len(change.stopped_mappings), changed_functions=sorted(change.functions))

    async def _stop_tasks(self, keys: list[str]) -> None:
        tasks = []
        for key in keys:
            kind, _, ident = key.partition(":")
            component: MappingRunner | AsyncWorker | None = (
                self.runners.get(ident) if kind == "mapping" else self._workers.get(ident))
            if component is not None:
                component.stop()
            if key in self._tasks:
                tasks.append(self._tasks[key])
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.broker.drain_timeout_seconds)
            for task in pending:
                task.cancel()

    def _local_enqueue(self, name: str) -> Callable[[str], Awaitable[None]] | None:
        """A Lambda destination naming one of this broker's functions: its async queue."""
        queue = self.queues.get(name)
        if queue is None:
            return None

        async def enqueue(event: str) -> None:
            await queue.enqueue(str(uuid.uuid4()), event)
            self.metrics.async_events_received.labels(name).inc()
        return enqueue

    async def readiness_problems(self) -> list[str]:
        synced = self._follower is not None and self._follower.synced
        return await readiness.problems(draining=self._draining, started=self.started.is_set() and synced,
                                        redis=self._redis, workers=self._workers, runners=self.runners)

