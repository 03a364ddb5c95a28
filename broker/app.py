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
import json
import shutil
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from broker import __version__, demo, redis_client
from broker.api import concurrency as concurrency_api
from broker.api import functions as functions_api
from broker.api import health, mappings
from broker.api import invoke as invoke_api
from broker.api import invoke_config as invoke_config_api
from broker.api.auth import Key, SigV4
from broker.api.errors import lambda_errors
from broker.arns import parse_arn, source_kind
from broker.async_invoke.invoke_config import InvokeConfigStore
from broker.async_invoke.queue import AsyncQueue
from broker.async_invoke.worker import AsyncSettings, AsyncWorker
from broker.aws import AwsClients, call
from broker.clock import Clock, SystemClock
from broker.concurrency.reservations import Reservations
from broker.concurrency.semaphore import ACCOUNT_POOL, ACCOUNT_REASON, RESERVED_REASON, Permits, Pool
from broker.config.models import Config, EventSourceMapping, FunctionConfig
from broker.config.watch import ConfigWatcher
from broker.control.registry import MappingRegistry
from broker.control.service import MappingService
from broker.control.validation import Refused
from broker.destinations.sender import DestinationSender
from broker.embedded import DataDirLock, EmbeddedAws, RedisServer, port_is_free
from broker.errors import AwsError, BrokerError, StartupError
from broker.function_factory import FunctionFactory
from broker.invoking.base import Function
from broker.observability.metrics import Metrics
from broker.redis_state import AutoPipeline, StateMarker
from broker.runtime.host import RuntimeHost
from broker.sources.factory import SourceFactory
from broker.sources.mapping import MappingRunner, Source
from broker.sources.shard_consumer import PrefetchBudget
from broker.types import SourceKind

log = structlog.get_logger("broker.app")
T = TypeVar("T")


class App:
    def __init__(self, config: Config, *, clock: Clock | None = None, metrics: Metrics | None = None,
                 config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.replica_id = config.broker.replica_id or socket.gethostname()
        self.runners: dict[str, MappingRunner] = {}
        self.kinds: dict[str, SourceKind] = {}
        self.functions: dict[str, Function] = {}
        self.api_port: int | None = None
        self.started = asyncio.Event()
        self._started_at = self.clock.time()
        self._stopping = asyncio.Event()
        self._draining = False
        self._redis: Any = None
        self._marker: StateMarker | None = None
        self._pipeline: AutoPipeline | None = None
        self.reservations: Reservations | None = None
        self._prefetch = PrefetchBudget(config.broker.stream_prefetch_max_mib * 1024 * 1024)
        self._aws: AwsClients | None = None
        self._sender: DestinationSender | None = None
        self.queues: dict[str, AsyncQueue] = {}
        self.invokables: dict[str, invoke_api.Invokable] = {}
        self._workers: dict[str, AsyncWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # "mapping:<uuid>" / "worker:<name>" -> task
        self._group: asyncio.TaskGroup | None = None
        self._http: aiohttp.ClientSession | None = None
        self._permits: Permits | None = None
        self.runtimes: dict[str, RuntimeHost] = {}  # execution environments of Runtime and Handler targets
        self._registry: MappingRegistry | None = None
        self._sources: SourceFactory | None = None
        self._factory: FunctionFactory | None = None
        self.control: MappingService | None = None
        self._api_docs: dict[str, str] = {}  # API mappings this replica runs, as stored
        self._apply_lock = asyncio.Lock()

    def request_stop(self) -> None:
        """Begin graceful shutdown (SIGTERM)."""
        if not self._stopping.is_set():
            log.info("shutdown_requested")
            self._draining = True
            self._stopping.set()

    async def run(self) -> None:
        settings = self.config.broker
        async with contextlib.AsyncExitStack() as stack:
            redis_url = await self._start_redis(stack)
            endpoint = await self._start_aws(stack)
            self._redis = await stack.enter_async_context(redis_client.connected(redis_url))
            self._marker = StateMarker(self._redis)
            self._pipeline = AutoPipeline(self._redis)  # hot paths (permits, async queues) batch their commands
            stack.push_async_callback(self._pipeline.aclose)
            self.reservations = Reservations(self._redis, lambda: self.config.functions,
                                             lambda: self.config.broker.account_concurrency)
            await self.reservations.refresh()
            self._permits = Permits(self._redis, self._pool, clock=self.clock, replica=self.replica_id,
                                    ttl_seconds=settings.permit_ttl_seconds, pipeline=self._pipeline)
            self._aws = AwsClients(region=settings.region, endpoint_url=endpoint,
                                   max_pool_connections=min(settings.sqs_max_pollers + 50, 1000))
            stack.push_async_callback(self._aws.aclose)
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=None))
            stack.push_async_callback(http.close)
            self._http = http
            self._sender = DestinationSender(self._aws, lambda_delivery=self._deliver_to_lambda)
            self._sources = SourceFactory(
                config=lambda: self.config, aws=self._aws, redis=self._redis, pipeline=self._pipeline,
                sender=self._sender, metrics=self.metrics, clock=self.clock, replica=self.replica_id,
                prefetch=self._prefetch, stopping=self._stopping)
            self._registry = MappingRegistry(self._redis)
            self.control = MappingService(
                registry=self._registry, functions=lambda: self.config.functions,
                file_mappings=lambda: {m.UUID or "": m for m in self.config.event_source_mappings},
                probe=self._probe_source, apply=self._apply_api_mappings, account=settings.account_id)
            self._factory = FunctionFactory(
                config=lambda: self.config, aws=self._aws, http=http, redis=self._redis, metrics=self.metrics,
                clock=self.clock, permits=self._permits, replica=self.replica_id, runtimes=self.runtimes)
            stack.push_async_callback(self._factory.aclose)  # after the drain: environments stop last
            for name, fn in self.config.functions.items():
                await self._add_function(name, fn)
            # The API (and /healthz) answers while the sources are checked: a slow or unreachable
            # AWS at start-up shows as not ready, not as a pod that never starts.
            runner = await self._start_api()
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

    async def _start_redis(self, stack: contextlib.AsyncExitStack) -> str:
        settings = self.config.broker
        if settings.redis_url != "embedded":
            return settings.redis_url
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
        server.start()  # on this thread: the server's parent-death signal follows the thread that started it
        stack.callback(server.stop)
        log.info("embedded_redis_started", url=server.url, dir=str(server.data_dir))
        return server.url

    async def _start_aws(self, stack: contextlib.AsyncExitStack) -> str | None:
        settings = self.config.broker
        endpoint = settings.aws_endpoint_url
        if endpoint != "embedded":
            return endpoint
        wanted = settings.embedded_aws_port
        port = wanted if wanted and port_is_free(wanted) else None
        if wanted and port is None:
            log.warning("embedded_aws_port_taken", port=wanted, setting="broker.embedded_aws_port",
                        note="another process listens there; a free port is used instead")
        server = EmbeddedAws(account_id=settings.account_id, port=port)
        await asyncio.to_thread(server.start)
        stack.callback(server.stop)
        log.info("embedded_aws_started", endpoint=server.url,
                 paste=f"export AWS_ENDPOINT_URL={server.url} AWS_DEFAULT_REGION={settings.region} "
                       "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
        return server.url

    async def _apply_api_mappings(self) -> None:
        """Run what the registry holds: start new API mappings, restart changed ones (streams go on
        from their checkpoints, SQS pollers with the new settings), stop deleted ones."""
        if self._registry is None or self._group is None or self._stopping.is_set():
            return
        async with self._apply_lock:
            try:
                stored = await self._registry.all()
            except BrokerError as exc:
                log.warning("api_mappings_unavailable", error=str(exc))
                return
            file_uuids = {m.UUID for m in self.config.event_source_mappings}
            for uuid_, item in stored.items():
                if uuid_ in file_uuids or self._api_docs.get(uuid_) == item.document:
                    continue
                await self._drop_mapping(uuid_)
                esm = EventSourceMapping.model_validate(item.mapping)
                if esm.FunctionName not in self.functions:
                    log.error("mapping_not_started", mapping=uuid_,
                              error=f"function {esm.FunctionName} is not declared")
                    continue
                try:
                    await self._add_mapping(esm, from_api=True)
                except BrokerError as exc:
                    log.error("mapping_not_started", mapping=uuid_, error=str(exc))
                    continue
                self.runners[uuid_].last_modified = item.last_modified
                self._api_docs[uuid_] = item.document
                self._spawn(f"mapping:{uuid_}", self.runners[uuid_].run())
                log.info("api_mapping_applied", mapping=uuid_, function=esm.FunctionName)
            for uuid_ in [u for u in self._api_docs if u not in stored]:
                await self._drop_mapping(uuid_)
                log.info("api_mapping_deleted", mapping=uuid_)
            await self._apply_enabled_overrides()

    async def _apply_enabled_overrides(self) -> None:
        """Pauses and resumes of file mappings made through the API on any replica, until the file
        itself changes ``Enabled`` (then the override lapses and the file's value applies)."""
        assert self._registry is not None
        try:
            overrides = await self._registry.enabled_overrides()
        except BrokerError as exc:
            log.warning("api_mappings_unavailable", error=str(exc))
            return
        for uuid_, (enabled, file_then) in overrides.items():
            runner = self.runners.get(uuid_)
            if runner is None or runner.from_api:
                continue
            if runner.file_enabled != file_then:
                with contextlib.suppress(BrokerError):
                    await self._registry.drop_enabled_override(uuid_)
                continue
            runner.set_enabled(enabled)

    async def _drop_mapping(self, uuid_: str) -> None:
        if uuid_ in self.runners:
            await self._stop_tasks([f"mapping:{uuid_}"])
            self.runners.pop(uuid_, None)
            self.kinds.pop(uuid_, None)
        self._api_docs.pop(uuid_, None)

    async def _probe_source(self, esm: EventSourceMapping) -> None:
        """CreateEventSourceMapping's check that the queue or stream exists, with AWS's wording."""
        assert self._aws is not None
        arn = parse_arn(esm.EventSourceArn)
        try:
            if source_kind(esm.EventSourceArn) is SourceKind.SQS:
                sqs = await self._aws.client("sqs")
                await call(sqs.get_queue_url, QueueName=arn.resource, QueueOwnerAWSAccountId=arn.account)
            elif arn.service == "kinesis":
                kinesis = await self._aws.client("kinesis")
                await call(kinesis.describe_stream_summary, StreamARN=esm.EventSourceArn)
            else:
                streams = await self._aws.client("dynamodbstreams")
                await call(streams.describe_stream, StreamArn=esm.EventSourceArn)
        except AwsError as exc:
            if exc.retryable:
                raise Refused(503, "ServiceException", f"the event source could not be checked: {exc}") from exc
            if source_kind(esm.EventSourceArn) is SourceKind.SQS:
                raise Refused(400, "InvalidParameterValueException",
                              "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService."
                              "NonExistentQueue. SQS Error Message: The specified queue does not exist.") from exc
            raise Refused(400, "InvalidParameterValueException", f"Stream not found: {esm.EventSourceArn}") from exc

    def _pool(self, name: str) -> Pool:
        """The permit pool of ``name`` under the current config (so a reload applies at once)."""
        assert self.reservations is not None
        reserved = self.reservations.reserved(name)
        if reserved is not None:
            return Pool(f"{{broker:fn:{name}}}:permits", reserved, RESERVED_REASON)
        return Pool(ACCOUNT_POOL, self.reservations.unreserved(), ACCOUNT_REASON)

    async def _refresh_gauges(self) -> None:
        """Permits in use and limits per function, and invocations waiting for an execution
        environment, read from Redis at scrape time (all replicas)."""
        for name, host in list(self.runtimes.items()):
            with contextlib.suppress(BrokerError):
                self.metrics.runtime_pending.labels(name).set(await host.pending())
        if self._permits is None:
            return
        for name in list(self.functions):
            pool = self._pool(name)
            self.metrics.permits_limit.labels(name).set(pool.limit)
            with contextlib.suppress(BrokerError):
                self.metrics.permits_in_use.labels(name).set(await self._permits.in_use(name))

    async def _add_mapping(self, esm: EventSourceMapping, *, from_api: bool = False) -> None:
        kind = source_kind(esm.EventSourceArn)
        function = self.functions[esm.FunctionName]
        assert self._sources is not None
        source: Source = await self._sources.build(esm, function, kind)
        runner = MappingRunner(esm, source, function_arn=function.arn, metrics=self.metrics,
                               clock=self.clock, from_api=from_api)
        assert esm.UUID is not None
        self.runners[esm.UUID] = runner
        self.kinds[esm.UUID] = kind

    def _api_middlewares(self) -> list[Any]:
        """SigV4 on every Lambda route unless the config chose otherwise (said once at start)."""
        s = self.config.broker
        api = s.api
        if api.authenticated:
            keys = [Key(c.AccessKeyId, c.SecretAccessKey or "", tuple(c.Actions), tuple(c.Resources))
                    for c in api.credentials]
            log.info("api_authentication", mode="sigv4", access_key_ids=[k.access_key_id for k in keys])
            return [lambda_errors, SigV4(keys, region=s.region, account=s.account_id, clock=self.clock,
                                     metrics=self.metrics).middleware]
        if api.loopback:
            log.info("api_unauthenticated", host=api.host,
                     note="no credentials configured: only processes on this machine can reach the API")
        else:
            log.warning("api_unauthenticated_network", host=api.host,
                        note="auth: none with allow_unauthenticated_network: anyone who reaches the port may "
                             "invoke functions, change concurrency and pause mappings")
        return [lambda_errors]

    async def _start_api(self) -> web.AppRunner:
        s = self.config.broker
        app = web.Application(client_max_size=7 * 1024 * 1024, middlewares=self._api_middlewares())
        app.add_routes(health.routes(self.metrics.registry, self.readiness_problems, self._refresh_gauges))
        app.add_routes(mappings.routes(self.runners, self.kinds, region=s.region, account=s.account_id,
                                       functions=lambda: self.config.functions, control=self.control))
        app.add_routes(invoke_api.routes(self.invokables, self.metrics, region=s.region, account=s.account_id))
        app.add_routes(invoke_config_api.routes(self.invokables, region=s.region, account=s.account_id))
        assert self.reservations is not None
        app.add_routes(concurrency_api.routes(self.functions, self.reservations, region=s.region, account=s.account_id,
                                              account_limit=lambda: self.config.broker.account_concurrency))
        app.add_routes(functions_api.routes(lambda: self.config.functions, self.reservations.reserved, self._redis,
                                            region=s.region, account=s.account_id,
                                            started=self._started_at))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, s.api.host, s.api.port, backlog=1024)  # bursts of new connections wait, not reset
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"broker.api.port: cannot listen on {s.api.host}:{s.api.port} ({exc.strerror or exc}); "
                               "is another broker running? Set broker.api.port (or BROKER_API_PORT) to a free port"
                               ) from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.api_port = sockets[0].getsockname()[1] if sockets else s.api.port
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
            background = [group.create_task(self._periodic(s.heartbeat_interval_seconds, self._heartbeat),
                                            name="heartbeat"),
                          group.create_task(self._periodic(1.0, self.reservations.refresh), name="reservations"),
                          group.create_task(self._periodic(1.0, self._apply_api_mappings), name="api-mappings")]
            if self.config_path is not None:
                watcher = ConfigWatcher(self.config_path, on_failure=self.metrics.config_reload_failures.inc)
                background.append(group.create_task(self._periodic(
                    s.config_reload_interval_seconds, functools.partial(watcher.check, self._reload)),
                    name="config-watcher"))
            local = self.config.local
            if local and local.producer:
                assert self._aws is not None
                background.append(group.create_task(demo.produce(self._aws, local.producer, self.clock),
                                                    name="demo-producer"))
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
        assert self._http is not None
        assert self._redis is not None
        assert self._factory is not None
        self.functions[name] = await self._factory.build(name, fn)
        self.queues[name] = AsyncQueue(self._redis, name, self._pipeline)
        from_file = fn.EventInvokeConfig if "EventInvokeConfig" in fn.model_fields_set else None
        store = InvokeConfigStore(self._redis, name, from_file, clock=self.clock, loaded_at=self.clock.time())
        self.invokables[name] = invoke_api.Invokable(self.functions[name], self.queues[name], store)

    def _start_worker(self, name: str) -> None:
        assert self._sender is not None
        assert self.reservations is not None
        s = self.config.broker
        settings = AsyncSettings(retry_delays_seconds=tuple(s.async_retry_delays_seconds),
                                 backoff_base_seconds=s.retry_backoff_base_seconds,
                                 backoff_max_seconds=s.retry_backoff_max_seconds, concurrency=s.async_concurrency,
                                 claim_idle_seconds=s.async_claim_idle_seconds)
        worker = AsyncWorker(function=self.functions[name], config=self.config.functions[name],
                             queue=self.queues[name], invoke_config=self.invokables[name].invoke_config,
                             reserved=functools.partial(self.reservations.reserved, name),
                             sender=self._sender, metrics=self.metrics, clock=self.clock,
                             settings=settings, consumer=self.replica_id)
        self._workers[name] = worker
        self._spawn(f"worker:{name}", worker.run())

    # ------------------------------------------------------------------ live reload

    async def _reload(self, new: Config) -> None:
        """Apply a changed, valid config file: functions and mappings added, removed, changed,
        enabled or disabled; streams resume from their checkpoints. Broker settings need a restart."""
        old = self.config
        changed_settings = sorted(k for k, v in new.broker.model_dump().items() if old.broker.model_dump()[k] != v)
        if changed_settings:
            log.warning("config_reload_restart_required", settings=changed_settings)
        new.broker = old.broker
        changed_functions = {n for n in set(old.functions) | set(new.functions)
                             if old.functions.get(n) != new.functions.get(n)}
        old_maps = {m.UUID: m for m in old.event_source_mappings}
        new_maps = {m.UUID: m for m in new.event_source_mappings}
        stop = [u for u, m in old_maps.items() if u not in new_maps or m.FunctionName in changed_functions
                or _without_enabled(m) != _without_enabled(new_maps[u])]
        await self._stop_tasks([f"mapping:{u}" for u in stop] + [f"worker:{n}" for n in changed_functions])
        for u in stop:
            self.runners.pop(u or "", None)
            self.kinds.pop(u or "", None)
        self.config = new
        for name in changed_functions:
            for table in (self.functions, self.queues, self.invokables, self._workers):
                table.pop(name, None)
            if name in new.functions:
                await self._add_function(name, new.functions[name])
                self._start_worker(name)
            elif self._factory is not None:
                await self._factory.remove(name)
        for u, esm in new_maps.items():
            if u in self.runners:
                self.runners[u].file_changed_enabled(esm.Enabled)  # a pause made through the API survives
                continue
            try:
                await self._add_mapping(esm)
            except BrokerError as exc:
                log.error("mapping_not_started", mapping=u, error=str(exc))
                continue
            self._spawn(f"mapping:{u}", self.runners[u or ""].run())
        log.info("config_reloaded", mappings=len(self.runners), functions=len(self.functions),
                 restarted_mappings=len(stop), changed_functions=sorted(changed_functions))

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

    async def _deliver_to_lambda(self, arn: str, event: str) -> None:
        """A Lambda destination: this broker's own function gets the record on its async queue;
        any other function is invoked asynchronously through the Lambda API."""
        name = arn.split(":function:", 1)[-1].split(":", maxsplit=1)[0]
        if name in self.queues and arn.split(":")[4] == self.config.broker.account_id:
            await self.queues[name].enqueue(str(uuid.uuid4()), event)
            self.metrics.async_events_received.labels(name).inc()
            return
        assert self._aws is not None
        client = await self._aws.client("lambda")
        await call(client.invoke, FunctionName=arn, InvocationType="Event", Payload=event.encode())

    async def _heartbeat(self) -> None:
        """A per-replica key operators can read: ``{broker}:replica:<id>`` (JSON, expiring); and
        the state marker compared, to notice a Redis that lost the broker's keys."""
        assert self._redis is not None
        assert self._marker is not None
        interval = self.config.broker.heartbeat_interval_seconds
        value = json.dumps({"replica": self.replica_id, "version": __version__,
                            "started": self._started_at, "mappings": sorted(self.runners)})
        try:
            await self._redis.set(f"{{broker}}:replica:{self.replica_id}", value, px=int(interval * 3000))
            if await self._marker.lost():
                self.metrics.state_lost.labels("redis").inc()
                log.error("redis_state_lost", what="redis",
                          note="Redis answered without the broker's keys (a flush, or a failover to a "
                               "replica that missed writes); consumer groups, scripts and heartbeats are "
                               "recreated, stream mappings resume from the checkpoints this replica knew")
        except (RedisError, OSError) as exc:
            log.warning("heartbeat_failed", error=str(exc))

    async def readiness_problems(self) -> list[str]:
        problems: list[str] = []
        if self._draining:
            problems.append("draining")
        if not self.started.is_set():
            problems.append("starting")
        if self._redis is not None:
            try:
                async with asyncio.timeout(2):
                    await self._redis.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                problems.append(f"redis: {exc.__class__.__name__}: {exc}")
        problems += [f"async: consumer group of {name} not joined" for name, worker in self._workers.items()
                     if not worker.ready]
        problems += await self._aws_problems()
        return problems

    async def _aws_problems(self) -> list[str]:
        """AWS is reachable if the first mapping's source answers a cheap call."""
        if not self.runners:
            return []
        runner = next(iter(self.runners.values()))
        try:
            async with asyncio.timeout(2):
                await runner.source.probe()
        except (BrokerError, TimeoutError) as exc:
            return [f"aws: {exc}"]
        return []


def _without_enabled(esm: EventSourceMapping) -> dict[str, Any]:
    return esm.model_dump(exclude={"Enabled"})


def describe_config(config: Config) -> dict[str, Any]:
    """Counts for ``broker validate``'s one-line summary."""
    kinds: dict[str, int] = {}
    for esm in config.event_source_mappings:
        kind = source_kind(esm.EventSourceArn).value
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"functions": len(config.functions), "mappings": len(config.event_source_mappings),
            "by_source": kinds}
