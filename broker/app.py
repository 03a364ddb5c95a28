"""The composition root: a broker from its config, started (``assembly``), filled with the config's
functions and mappings, and served until SIGTERM (``lifecycle``).

Start: embedded servers (if configured) → Redis and AWS clients → functions → the API → local demo
resources → mappings (each checked against its queue) → serve.
Stop (SIGTERM): /readyz fails → sources stop taking work → in-flight batches drain for up to
``drain_timeout_seconds`` → the rest is cancelled → clients and embedded servers close.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from broker import __version__, demo
from broker.api import server
from broker.assembly import Context, Parts, assemble
from broker.async_invoke.queue import AsyncQueue
from broker.clock import Clock, SystemClock
from broker.config.models import Config
from broker.config.watch import ConfigWatcher
from broker.control.service import MappingService
from broker.errors import BrokerError
from broker.invoking.function import Function
from broker.lifecycle import Background, periodic, serve
from broker.observability import gauges, readiness
from broker.observability.metrics import Metrics
from broker.redis.state import Heartbeat
from broker.running.records import Running, RunningFunction, RunningMapping, View
from broker.running.reload import Reloader
from broker.running.tasks import Tasks
from broker.runtime.host import RuntimeHost
from broker.sources.mapping import MappingRunner
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
        self.running = Running()
        self.tasks = Tasks()
        self.runtimes: dict[str, RuntimeHost] = {}  # execution environments of Runtime and Handler targets
        self.started = asyncio.Event()
        self._started_at = self.clock.time()
        self._stopping = asyncio.Event()
        self._draining = False
        self._parts: Parts | None = None  # once started: see ``parts``

    # what runs here, by name (read-only views of the records)
    @property
    def functions(self) -> View[RunningFunction, Function]:
        return self.running.functions

    @property
    def queues(self) -> View[RunningFunction, AsyncQueue]:
        return self.running.queues

    @property
    def runners(self) -> View[RunningMapping, MappingRunner]:
        return self.running.runners

    @property
    def kinds(self) -> View[RunningMapping, SourceKind]:
        return self.running.kinds

    @property
    def parts(self) -> Parts:
        """The connected parts; an error before start-up has built them."""
        if self._parts is None:
            raise BrokerError("the broker has not started")
        return self._parts

    @property
    def redis(self) -> Any:
        return self.parts.redis

    @property
    def api_port(self) -> int:
        port: int = self.parts.api_socket.getsockname()[1]
        return port

    @property
    def http_app(self) -> web.Application:
        return self.parts.api

    @property
    def control(self) -> MappingService:
        return self.parts.control

    def request_stop(self) -> None:
        """Begin graceful shutdown (SIGTERM)."""
        if not self._stopping.is_set():
            log.info("shutdown_requested")
            self._draining = True
            self._stopping.set()

    async def run(self) -> None:
        ctx = Context(config=lambda: self.config, running=self.running, tasks=self.tasks, runtimes=self.runtimes,
                      metrics=self.metrics, clock=self.clock, replica=self.replica_id, started_at=self._started_at,
                      stopping=self._stopping, readiness=self.readiness_problems, gauges=self._refresh_gauges)
        async with contextlib.AsyncExitStack() as stack:
            parts = self._parts = await assemble(ctx, stack)
            for name, fn in self.config.functions.items():
                await parts.functions.add(name, fn)
            # The API (and /healthz) answers while the sources are checked: a slow or unreachable
            # AWS at start-up shows as not ready, not as a pod that never starts.
            runner = await server.listen(parts.api, parts.api_socket)
            stack.push_async_callback(runner.cleanup)
            log.info("api_listening", host=self.config.broker.api.host, port=self.api_port, version=__version__)
            local = self.config.local
            if local:
                await parts.sources.when_reachable("embedded demo resources",
                                                   lambda: demo.create_resources(parts.aws, local))
            for esm in self.config.event_source_mappings:
                await parts.mappings.add(esm)
            if not self._stopping.is_set():
                await serve(self.tasks, start=self._start, background=self._background(parts),
                            started=self._say_started, stopping=self._stopping, stop=self._stop,
                            drain_timeout=self.config.broker.drain_timeout_seconds)
                await parts.status.leave()  # the status stops showing this replica at once

    def _start(self) -> None:
        self.parts.mappings.start_all()
        for name in self.functions:
            self.parts.functions.start(name)

    def _stop(self) -> None:
        self.parts.mappings.stop_all()
        self.parts.functions.stop_all()

    def _background(self, parts: Parts) -> list[Background]:
        s, stopping = self.config.broker, self._stopping
        heartbeat = Heartbeat(parts.redis, replica=self.replica_id, version=__version__, started=self._started_at,
                              interval=s.heartbeat_interval_seconds, mappings=lambda: list(self.runners),
                              on_lost=self.metrics.state_lost.labels("redis").inc)
        loops: list[Background] = [
            ("heartbeat", periodic(stopping, s.heartbeat_interval_seconds, heartbeat.beat)),
            ("reservations", periodic(stopping, 1.0, parts.reservations.refresh)),
            ("api-mappings", periodic(stopping, 1.0, self._follow)),
            ("status", periodic(stopping, s.status_interval_seconds, parts.status.publish))]
        if self.config_path is not None:
            reload = Reloader(config=lambda: self.config, commit=self._commit, functions=parts.functions,
                              mappings=parts.mappings, reapply=self._reapply, auth=parts.auth,
                              metrics=self.metrics)
            watcher = ConfigWatcher(self.config_path, on_failure=self.metrics.config_reload_failures.inc,
                                    also=lambda: [c.SecretAccessKeyFile for c in self.config.broker.api.credentials
                                                  if c.SecretAccessKeyFile is not None])
            loops.append(("config-watcher", periodic(stopping, s.config_reload_interval_seconds,
                                                     functools.partial(watcher.check, reload))))
        local = self.config.local
        if local and local.producer:
            loops.append(("demo-producer", demo.produce(parts.aws, local.producer, self.clock)))
        return loops

    def _commit(self, new: Config) -> None:
        self.config = new

    async def _follow(self) -> None:
        await self.parts.follow()

    async def _reapply(self, uuids: list[str]) -> None:
        """API mappings a reload stopped start again from the registry, on the functions as they are now."""
        self.parts.follower.unapply(uuids)
        if uuids:
            await self._follow()

    async def _say_started(self) -> None:
        await self._follow()  # the registry's mappings run (and are known) from the start
        self.started.set()
        log.info("broker_started", mappings=len(self.runners), functions=len(self.functions),
                 replica=self.replica_id)

    async def _refresh_gauges(self) -> None:
        if self._parts is not None:
            permits = self._parts.permits
            await gauges.refresh(self.metrics, runtimes=self.runtimes, functions=list(self.functions),
                                 limit=lambda name: permits.pool(name).limit, in_use=permits.in_use)

    async def readiness_problems(self) -> list[str]:
        parts = self._parts
        synced = parts is not None and parts.follower.synced
        return await readiness.problems(draining=self._draining, started=self.started.is_set() and synced,
                                        redis=parts.redis if parts else None, workers=self.running.workers,
                                        aws=parts.mappings.probe if parts else None)
