"""A stream mapping: discovers shards and runs one ``ShardConsumer`` per shard, children only
after their parents are read to their end (per-key order across resharding).

Shards listed at the mapping's first start begin at ``StartingPosition``; shards found later
(children of a split or merge) begin at TRIM_HORIZON, so nothing written to them is skipped.
Discovery runs at start, every ``discovery_interval_seconds``, and whenever a shard ends.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from broker.batching.filtering import RecordFilter
from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError
from broker.invoking.base import Function
from broker.observability.metrics import Metrics
from broker.sources.checkpoints import SHARD_END, CheckpointStore
from broker.sources.shard_consumer import ShardConsumer, ShutdownReason, StreamMappingSpec, StreamSettings
from broker.sources.streams import StreamService
from broker.types import ShardInfo

log = structlog.get_logger("broker.streams")


def mapping_spec(esm: EventSourceMapping, data_key: str) -> StreamMappingSpec:
    assert esm.UUID is not None
    patterns = [f.Pattern for f in esm.FilterCriteria.Filters] if esm.FilterCriteria else []
    destination = esm.DestinationConfig.OnFailure.Destination if (
        esm.DestinationConfig and esm.DestinationConfig.OnFailure) else ""
    return StreamMappingSpec(
        uuid=esm.UUID, batch_size=esm.BatchSize or 100,
        window_seconds=float(esm.MaximumBatchingWindowInSeconds or 0),
        parallelization=esm.ParallelizationFactor or 1,
        max_retry_attempts=-1 if esm.MaximumRetryAttempts is None else esm.MaximumRetryAttempts,
        max_record_age_seconds=-1 if esm.MaximumRecordAgeInSeconds is None else esm.MaximumRecordAgeInSeconds,
        bisect=bool(esm.BisectBatchOnFunctionError),
        report_batch_item_failures=esm.report_batch_item_failures,
        destination=destination or None,
        starting_position=esm.StartingPosition or "TRIM_HORIZON",
        starting_timestamp=esm.StartingPositionTimestamp,
        filter=RecordFilter.compile(patterns, data_key))


class StreamMapping:
    """All shard consumers of one Kinesis or DynamoDB Streams mapping."""

    def __init__(self, *, esm: EventSourceMapping, function: Function, service: StreamService,
                 checkpoints: CheckpointStore, sender: DestinationSender, metrics: Metrics, clock: Clock,
                 settings: StreamSettings, discovery_interval_seconds: float) -> None:
        self.esm = esm
        self.last_processing_result = "No records processed"
        self._spec = mapping_spec(esm, service.data_key)
        self._function = function
        self._service = service
        self._checkpoints = checkpoints
        self._sender = sender
        self._metrics = metrics
        self._clock = clock
        self._settings = settings
        self._discovery_interval = discovery_interval_seconds
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.consumers: dict[str, ShardConsumer] = {}

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for consumer in self.consumers.values():
            consumer.stop()

    async def probe(self) -> None:
        await self._service.shards()

    def _record_result(self, result: str) -> None:
        self.last_processing_result = result

    async def run(self) -> None:
        self._stop = asyncio.Event()
        structlog.contextvars.bind_contextvars(mapping=self._spec.uuid, function=self._function.name)
        shards = await self._service.shards()
        initial = await self._checkpoints.initial_shards([s.shard_id for s in shards], self._clock.time())
        async with asyncio.TaskGroup() as group:
            while not self._stop.is_set():
                try:
                    saved = await self._checkpoints.all()
                except BrokerError as exc:
                    log.warning("checkpoint_read_failed", error=str(exc))
                else:
                    self._start_ready(group, shards, initial, saved)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._discovery_interval)
                if self._stop.is_set():
                    break
                try:
                    shards = await self._service.shards()
                except BrokerError as exc:
                    log.warning("shard_discovery_failed", error=str(exc))
            for consumer in self.consumers.values():
                consumer.stop()

    def _start_ready(self, group: asyncio.TaskGroup, shards: list[ShardInfo], initial: set[str],
                     saved: dict[str, str]) -> None:
        listed = {s.shard_id for s in shards}
        finished = {k for k, v in saved.items() if v == SHARD_END}
        for shard in shards:
            running = self.consumers.get(shard.shard_id)
            if running is not None:
                if shard.closed and running.shard.ending_sequence != shard.ending_sequence:
                    running.mark_closed(shard.ending_sequence or "")
                continue
            if shard.shard_id in finished:
                continue
            # A parent that is no longer listed (past retention) counts as read to its end.
            if any(p in listed and p not in finished for p in shard.parents):
                continue
            start = ((self._spec.starting_position, self._spec.starting_timestamp)
                     if shard.shard_id in initial else ("TRIM_HORIZON", None))
            consumer = ShardConsumer(
                shard=shard, service=self._service, spec=self._spec, function=self._function,
                checkpoints=self._checkpoints, sender=self._sender, metrics=self._metrics,
                clock=self._clock, settings=self._settings, start=start, checkpoint=saved.get(shard.shard_id),
                on_result=self._record_result)
            self.consumers[shard.shard_id] = consumer
            group.create_task(self._run_consumer(consumer), name=f"shard:{shard.shard_id}")

    async def _run_consumer(self, consumer: ShardConsumer) -> None:
        shard_id = consumer.shard.shard_id
        try:
            reason = await consumer.run()
        except BrokerError as exc:
            log.error("shard_consumer_failed", shard=shard_id, error=str(exc))
            await self._clock.sleep(self._settings.backoff_base_seconds)
            reason = ShutdownReason.REQUESTED
        finally:
            self.consumers.pop(shard_id, None)
        if reason is ShutdownReason.SHARD_END:
            log.info("shard_finished", shard=shard_id)
        self._wake.set()  # children may start now (their parent's SHARD_END is saved); a failed consumer restarts
