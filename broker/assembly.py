"""Start-up: every part of a broker built from its config, connected, in the order each needs the
last (embedded servers → Redis → concurrency → AWS → destinations → sources → the API's port → the
account → functions and mappings → the control plane → the API). Nothing here runs yet; ``app``
adds the config's functions and mappings and ``lifecycle`` serves them. Only this module knows
every concrete class."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from broker import __version__, account
from broker.api import concurrency as concurrency_api
from broker.api import console as console_api
from broker.api import functions as functions_api
from broker.api import health, mappings, server
from broker.api import invoke as invoke_api
from broker.api import invoke_config as invoke_config_api
from broker.api import position as position_api
from broker.api import quarantine as quarantine_api
from broker.api import status as status_api
from broker.api.auth import SigV4
from broker.aws.clients import AwsClients
from broker.clock import Clock
from broker.concurrency.permits import Permits
from broker.concurrency.reservations import Reservations
from broker.config.models import Config
from broker.control.follower import RegistryFollower
from broker.control.registry import MappingRegistry
from broker.control.service import MappingService
from broker.control.tags import TagStore
from broker.destinations.lambda_route import LambdaDestinations
from broker.destinations.sender import DestinationSender
from broker.embedded import start_embedded_aws, start_embedded_redis
from broker.function_factory import FunctionFactory
from broker.observability.metrics import Metrics
from broker.quarantine.replay import Replayer
from broker.quarantine.store import Bounds, Quarantines
from broker.redis import client as redis_client
from broker.redis.client import RedisClient
from broker.redis.pipeline import AutoPipeline
from broker.running.functions import FunctionTable
from broker.running.mappings import MappingTable
from broker.running.records import Running
from broker.running.tasks import Tasks
from broker.runtime.host import RuntimeHost
from broker.sources.factory import SourceFactory
from broker.sources.streams.checkpoints import CheckpointStore
from broker.sources.streams.types import PrefetchBudget
from broker.status.board import StatusBoard
from broker.status.document import StatusDocument
from broker.status.facts import Facts
from broker.status.reporter import StatusReporter
from broker.tracing import spans
from broker.tracing.spans import tracing

_MAX_BODY = 7 * 1024 * 1024  # above Invoke's 6 MiB, so Lambda's own 413 answers a larger payload


log = structlog.get_logger("broker.app")


@dataclass(frozen=True)
class Parts:
    """The connected parts of a broker that has started."""

    redis: RedisClient
    pipeline: AutoPipeline
    reservations: Reservations
    permits: Permits
    aws: AwsClients
    sources: SourceFactory
    functions: FunctionTable
    mappings: MappingTable
    follower: RegistryFollower
    follow: Callable[[], Awaitable[None]]  # apply the registry now, if the broker serves
    control: MappingService
    auth: SigV4 | None
    api: web.Application
    api_socket: socket.socket
    status: StatusReporter  # this replica's view on the status board


@dataclass(frozen=True)
class Context:
    """What start-up is given: the running config (it changes on a reload), the records it fills,
    and the replica's own settings."""

    config: Callable[[], Config]
    running: Running
    tasks: Tasks
    runtimes: dict[str, RuntimeHost]  # execution environments, by function
    metrics: Metrics
    clock: Clock
    replica: str
    started_at: float
    stopping: asyncio.Event
    readiness: Callable[[], Awaitable[list[str]]]
    gauges: Callable[[], Awaitable[None]]


def _start_tracing(ctx: Context, stack: contextlib.AsyncExitStack) -> None:
    t = ctx.config().broker.tracing
    if t.exporter == "otlp" or spans.wanted_by_environment():
        tracing.configure(endpoint=t.endpoint, sample_ratio=t.sample_ratio, service_name=t.service_name,
                          dropped=ctx.metrics.trace_spans_dropped)
        stack.push_async_callback(asyncio.to_thread, tracing.shutdown)  # the last spans go out at the end
        log.info("tracing_on", endpoint=t.endpoint or "OTEL_EXPORTER_OTLP_ENDPOINT", sample_ratio=t.sample_ratio)


async def assemble(ctx: Context, stack: contextlib.AsyncExitStack) -> Parts:
    config = ctx.config()
    s = config.broker
    _start_tracing(ctx, stack)
    redis_url = start_embedded_redis(s, stack) if s.redis_url == "embedded" else s.redis_url
    endpoint = await start_embedded_aws(s, stack) if s.aws_endpoint_url == "embedded" else s.aws_endpoint_url
    redis = await stack.enter_async_context(redis_client.connected(redis_url))
    pipeline = AutoPipeline(redis)  # hot paths (permits, async queues) batch their commands
    stack.push_async_callback(pipeline.aclose)
    reservations = Reservations(redis, lambda: ctx.config().functions, lambda: ctx.config().broker.account_concurrency)
    await reservations.refresh()
    permits = Permits(redis, reservations.pool, clock=ctx.clock, replica=ctx.replica,
                      ttl_seconds=s.permit_ttl_seconds, pipeline=pipeline)
    aws = AwsClients(region=s.region, endpoint_url=endpoint, max_pool_connections=min(s.sqs_max_pollers + 50, 1000))
    stack.push_async_callback(aws.aclose)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))
    stack.push_async_callback(http.close)
    lambdas = LambdaDestinations(aws=aws, account=lambda: ctx.config().broker.account_id, queues=ctx.running.queues,
                                 received=lambda name: ctx.metrics.async_events_received.labels(name).inc())
    sender = DestinationSender(aws, lambda_delivery=lambdas.deliver)
    quarantines = Quarantines(
        redis, clock=ctx.clock, metrics=ctx.metrics,
        bounds=lambda: Bounds(ctx.config().broker.quarantine_retention_seconds,
                              ctx.config().broker.quarantine_max_records))
    sources = SourceFactory(
        config=ctx.config, aws=aws, redis=redis, pipeline=pipeline, sender=sender, quarantines=quarantines,
        metrics=ctx.metrics,
        clock=ctx.clock, replica=ctx.replica, prefetch=PrefetchBudget(s.stream_prefetch_max_mib * 1024 * 1024),
        stopping=ctx.stopping)
    api_socket = server.bind(s.api)  # a taken port ends start-up at once
    stack.callback(api_socket.close)
    s.account_id = await account.resolve(config, aws, sources.when_reachable, api_socket)
    factory = FunctionFactory(config=ctx.config, aws=aws, http=http, redis=redis, metrics=ctx.metrics,
                              clock=ctx.clock, permits=permits, replica=ctx.replica, runtimes=ctx.runtimes)
    stack.push_async_callback(factory.aclose)  # after the drain: environments stop last
    functions = FunctionTable(ctx.running, config=ctx.config, factory=factory, redis=redis, pipeline=pipeline,
                              sender=sender, quarantines=quarantines, reservations=reservations, tasks=ctx.tasks,
                              metrics=ctx.metrics, clock=ctx.clock, replica=ctx.replica)
    table = MappingTable(ctx.running, sources=sources, tasks=ctx.tasks, metrics=ctx.metrics, clock=ctx.clock,
                         drain_timeout=lambda: ctx.config().broker.drain_timeout_seconds)
    registry = MappingRegistry(redis)
    follower = RegistryFollower(registry, mappings=table, functions=lambda: ctx.running.functions,
                                file_uuids=lambda: {m.UUID or "" for m in ctx.config().event_source_mappings})

    async def follow() -> None:  # the registry now (also every second): what API mappings this replica runs
        if ctx.tasks.open and not ctx.stopping.is_set():
            await follower.apply()

    control = MappingService(
        registry=registry, functions=lambda: ctx.config().functions,
        file_mappings=lambda: {m.UUID or "": m for m in ctx.config().event_source_mappings},
        probe=sources.check, apply=follow, account=s.account_id)
    auth = server.authenticator(s.api, region=s.region, account=s.account_id, clock=ctx.clock, metrics=ctx.metrics)
    api = web.Application(client_max_size=_MAX_BODY, middlewares=server.middlewares(auth))
    where = {"region": s.region, "account": s.account_id}
    api.add_routes(health.routes(ctx.metrics.registry, ctx.readiness, ctx.gauges))
    api.add_routes(mappings.routes(table, functions=lambda: ctx.config().functions, control=control,
                                   runs=follower.runs, **where))
    api.add_routes(invoke_api.routes(ctx.running.function_records, ctx.metrics, **where))
    api.add_routes(invoke_config_api.routes(ctx.running.function_records, **where))
    api.add_routes(concurrency_api.routes(ctx.running.functions, reservations, **where,
                                          account_limit=lambda: ctx.config().broker.account_concurrency))
    replayer = Replayer(functions=ctx.running.functions, queues=ctx.running.queues, spawn=ctx.tasks.spawn,
                        metrics=ctx.metrics)
    api.add_routes(quarantine_api.routes(quarantines, replayer, catalog=control.catalog,
                                         functions=lambda: ctx.config().functions, **where))
    api.add_routes(position_api.routes(catalog=control.catalog, shards=sources.shards, clock=ctx.clock,
                                       checkpoints=lambda uuid: CheckpointStore(redis, uuid, pipeline)))
    api.add_routes(functions_api.routes(lambda: ctx.config().functions, reservations.reserved, TagStore(redis),
                                        started=ctx.started_at, **where))
    api.add_routes(console_api.routes(auth, ctx.metrics))
    board = StatusBoard(redis)
    reporter = StatusReporter(board, replica=ctx.replica, version=__version__, started_at=ctx.started_at,
                              clock=ctx.clock, metrics=ctx.metrics, problems=ctx.readiness, mappings=table.described,
                              interval=lambda: ctx.config().broker.status_interval_seconds,
                              environments=lambda: {n: h.dispatcher.counts() for n, h in ctx.runtimes.items()})
    facts = Facts(redis, permits=permits, queues=ctx.running.queues, runtimes=ctx.runtimes, clock=ctx.clock)
    api.add_routes(status_api.routes(StatusDocument(
        board, clock=ctx.clock, catalog=control.catalog, functions=lambda: ctx.config().functions, shards=facts.shards,
        function_facts=facts.function,
        quarantined=lambda uuid, function: quarantines.of_mapping(uuid, function).count())))
    return Parts(redis=redis, pipeline=pipeline, reservations=reservations, permits=permits, aws=aws,
                 sources=sources, functions=functions, mappings=table, follower=follower, follow=follow,
                 control=control, auth=auth, api=api, api_socket=api_socket, status=reporter)
