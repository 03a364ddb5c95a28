"""The functions this replica runs: each built from its config with its async queue, its
event-invoke-config store and, while the broker serves, the worker that drains that queue."""

from __future__ import annotations

import functools
from collections.abc import Callable

from broker.async_invoke.invoke_config import InvokeConfigStore
from broker.async_invoke.queue import AsyncQueue
from broker.async_invoke.worker import AsyncSettings, AsyncWorker
from broker.clock import Clock
from broker.concurrency.reservations import Reservations
from broker.config.models import Config, FunctionConfig
from broker.destinations.sender import DestinationSender
from broker.function_factory import FunctionFactory
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantines
from broker.redis.client import RedisClient
from broker.redis.pipeline import AutoPipeline
from broker.running.records import Running, RunningFunction
from broker.running.tasks import Tasks


class FunctionTable:
    def __init__(self, running: Running, *, config: Callable[[], Config], factory: FunctionFactory, redis: RedisClient,
                 pipeline: AutoPipeline, sender: DestinationSender, quarantines: Quarantines,
                 reservations: Reservations, tasks: Tasks,
                 metrics: Metrics, clock: Clock, replica: str) -> None:
        self._records = running.function_records
        self._config = config
        self._factory = factory
        self._redis = redis
        self._pipeline = pipeline
        self._sender = sender
        self._quarantines = quarantines
        self._reservations = reservations
        self._tasks = tasks
        self._metrics = metrics
        self._clock = clock
        self._replica = replica

    async def add(self, name: str, fn: FunctionConfig) -> None:
        """Build the function (its execution environments start here); its worker starts with ``start``."""
        function = await self._factory.build(name, fn)
        queue = AsyncQueue(self._redis, name, self._pipeline)
        from_file = fn.EventInvokeConfig if "EventInvokeConfig" in fn.model_fields_set else None
        store = InvokeConfigStore(self._redis, name, from_file, clock=self._clock, loaded_at=self._clock.time())
        self._records[name] = RunningFunction(function, queue, store)

    def start(self, name: str) -> None:
        """Run the worker of the function's async queue."""
        s = self._config().broker
        settings = AsyncSettings(retry_delays_seconds=tuple(s.async_retry_delays_seconds),
                                 backoff_base_seconds=s.retry_backoff_base_seconds,
                                 backoff_max_seconds=s.retry_backoff_max_seconds, concurrency=s.async_concurrency,
                                 claim_idle_seconds=s.async_claim_idle_seconds)
        running = self._records[name]
        worker = AsyncWorker(function=running.function, config=self._config().functions[name],
                             queue=running.queue, invoke_config=running.invoke_config,
                             reserved=functools.partial(self._reservations.reserved, name),
                             sender=self._sender, metrics=self._metrics, clock=self._clock,
                             settings=settings, consumer=self._replica,
                             quarantine=self._quarantines.of_function(name))
        running.worker = worker
        self._tasks.spawn(f"worker:{name}", worker.run())

    async def stop(self, names: list[str]) -> None:
        """Stop these functions' workers (their events in flight finish) and forget the functions."""
        for name in names:
            running = self._records.get(name)
            if running is not None and running.worker is not None:
                running.worker.stop()
        await self._tasks.wait([f"worker:{n}" for n in names], self._config().broker.drain_timeout_seconds)
        for name in names:
            self._records.pop(name, None)

    async def remove(self, name: str) -> None:
        """The function left the config: its execution environments stop too."""
        await self.stop([name])
        await self._factory.remove(name)

    def stop_all(self) -> None:
        """Shutdown: every worker stops taking events."""
        for running in self._records.values():
            if running.worker is not None:
                running.worker.stop()
