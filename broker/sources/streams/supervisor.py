"""A stream mapping: discovers shards and runs one ``ShardConsumer`` per shard, children only
after their parents are read to their end (per-key order across resharding).

Shards listed at the mapping's first start begin at ``StartingPosition``; shards found later
(children of a split or merge) begin at TRIM_HORIZON, so nothing written to them is skipped.
Discovery runs at start, every ``discovery_interval_seconds``, and whenever a shard ends.

When the mapping's position is set (a rewind, ``checkpoints.CheckpointStore.set_start``), every
replica sees the generation change in its next round: its consumers stop without a checkpoint (their
leases were freed at a new epoch, so they could not write one anyway), what it remembered of the old
checkpoints is forgotten, and the shards start again from the new checkpoints or position.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

import structlog

from broker.batching.filtering import RecordFilter
from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError, describe, only_broker_errors
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantine
from broker.sources.streams.checkpoints import SHARD_END, CheckpointStore, Saved
from broker.sources.streams.leases import Fence, LeaseTable
from broker.sources.streams.parking import ParkedKeys
from broker.sources.streams.service import StreamService
from broker.sources.streams.shard_consumer import ShardConsumer, ShutdownReason
from broker.sources.streams.types import PrefetchBudget, StreamMappingSpec, StreamSettings
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
        filter=RecordFilter.compile(patterns, data_key),
        tumbling_window_seconds=esm.TumblingWindowInSeconds or 0,
        isolate_failing_keys=bool(esm.IsolateFailingKeys))


class ShardSupervisor:
    """All shard consumers of one Kinesis or DynamoDB Streams mapping in this replica.

    Replicas share the shards through leases: each tick (a third of the lease TTL) a replica
    renews its leases, marks itself alive, and moves towards its share, ceil(eligible shards / live
    replicas): above it, it hands shards off (the consumer stops, checkpoints, then the lease is
    released); below it, it takes free or expired leases. A crashed replica's shards are taken over
    once its leases expire; a replica that lost a lease stops that consumer without checkpointing.
    """

    def __init__(self, *, esm: EventSourceMapping, function: Function, service: StreamService,
                 checkpoints: CheckpointStore, leases: LeaseTable, sender: DestinationSender,
                 quarantine: Quarantine | None, metrics: Metrics,
                 clock: Clock, settings: StreamSettings, discovery_interval_seconds: float,
                 lease_ttl_seconds: float, budget: PrefetchBudget | None = None,
                 parking: Callable[..., ParkedKeys] | None = None) -> None:
        self.esm = esm
        self.last_processing_result = "No records processed"
        self._spec = mapping_spec(esm, service.data_key)
        self._function = function
        self._service = service
        self._checkpoints = checkpoints
        self._budget = budget  # shared by every mapping of the replica
        self._parking = parking  # a shard's parked keys: parking(shard_id=, fence=)
        self._leases = leases
        self._sender = sender
        self._quarantine = quarantine
        self._metrics = metrics
        self._clock = clock
        self._settings = settings
        self._discovery_interval = discovery_interval_seconds
        self._tick = min(lease_ttl_seconds / 3, discovery_interval_seconds)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.consumers: dict[str, ShardConsumer] = {}
        self.held: dict[str, Fence] = {}
        self._handoff: set[str] = set()
        self._m_leases = metrics.leases_owned.labels(function.name, self._spec.uuid)
        self._m_lost = metrics.state_lost.labels("checkpoint")
        self._known: dict[str, str] = {}  # checkpoints last read or written: written back if Redis loses them
        self._generation: str | None = None  # of the mapping's position, as last read (None: not yet)
        self._start_at: tuple[str, float | None] = (self._spec.starting_position, self._spec.starting_timestamp)
        self._initial: set[str] = set()  # the shards that take _start_at (the others TRIM_HORIZON)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for consumer in self.consumers.values():
            consumer.stop()

    def describe(self) -> dict[str, Any]:
        """This replica's shards of the mapping, as the status shows them."""
        shards = [{**consumer.describe(), "Owner": self._leases.replica} for consumer in list(self.consumers.values())]
        return {"Shards": shards, "InFlightBatches": sum(s["InFlight"] for s in shards)}

    async def probe(self) -> None:
        await self._service.shards()

    def _record_result(self, result: str) -> None:
        self.last_processing_result = result

    async def run(self) -> None:
        self._stop = asyncio.Event()
        structlog.contextvars.bind_contextvars(mapping=self._spec.uuid, function=self._function.name)
        shards = await self._service.shards()
        self._generation = None
        discovered = self._clock.monotonic()
        async with asyncio.TaskGroup() as group:
            while not self._stop.is_set():
                try:
                    live = await self._leases.beat()
                    await self._renew()
                    state = await self._checkpoints.state()
                    if state.generation != self._generation:
                        shards = await self._follow_position(state, shards)
                    saved = await self._prune(state.checkpoints, shards)
                    saved = await self._restore_lost(saved, shards)
                    await self._balance(group, shards, saved, live)
                except BrokerError as exc:
                    log.warning("lease_round_failed", error=str(exc))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._tick)
                if self._stop.is_set():
                    break
                if self._clock.monotonic() - discovered >= self._discovery_interval * 0.99:
                    discovered = self._clock.monotonic()
                    try:
                        shards = await self._service.shards()
                    except BrokerError as exc:
                        log.warning("shard_discovery_failed", error=str(exc))
            for consumer in self.consumers.values():
                consumer.stop()
        for shard, fence in list(self.held.items()):  # after the final checkpoints: hand off
            with contextlib.suppress(BrokerError):
                await self._leases.release(shard, fence)
        self.held.clear()
        self._m_leases.set(0)
        with contextlib.suppress(BrokerError):
            await self._leases.beat(leaving=True)

    async def _follow_position(self, state: Saved, shards: list[ShardInfo]) -> list[ShardInfo]:
        """The mapping's position as stored: at the first round, or after it was set (a rewind)."""
        first = self._generation is None
        self._generation = state.generation
        self._start_at = state.position or (self._spec.starting_position, self._spec.starting_timestamp)
        if not first:
            log.info("mapping_position_set", generation=state.generation, start=self._start_at[0],
                     checkpoints=len(state.checkpoints), stopping=sorted(self.consumers))
            for consumer in self.consumers.values():
                consumer.lose_lease()
            self.held.clear()
            self._handoff.clear()
            self._known.clear()
            shards = await self._service.shards()
        self._initial = await self._checkpoints.initial_shards([s.shard_id for s in shards], self._clock.time())
        return shards

    async def _prune(self, saved: dict[str, str], shards: list[ShardInfo]) -> dict[str, str]:
        """Forget ended shards whose children have checkpoints (bounded state across reshards)."""
        done = {p for p in _proven_ended(shards, saved) if p in saved and p not in self.consumers}
        if not done:
            return saved
        await self._checkpoints.prune(done)
        log.info("shards_forgotten", shards=sorted(done), reason="children have checkpoints")
        for shard in done:
            self._known.pop(shard, None)
        return {k: v for k, v in saved.items() if k not in done}

    async def _restore_lost(self, saved: dict[str, str], shards: list[ShardInfo]) -> dict[str, str]:
        """Checkpoints this replica saw that Redis no longer has (a flush, a failover to a stale
        replica) are written back, said loudly and counted; a shard resumes after them instead
        of at its starting position."""
        listed = {s.shard_id for s in shards}
        proven = _proven_ended(shards, saved)  # forgotten on purpose (pruned), not lost
        lost = {k: v for k, v in self._known.items() if k not in saved and k in listed and k not in proven}
        for shard, sequence in lost.items():
            self._m_lost.inc()
            log.error("checkpoint_lost", shard=shard, resume_after=sequence,
                      note="Redis no longer had this shard's checkpoint; written back from this replica's memory")
            await self._checkpoints.restore(shard, sequence, self._generation or "0")
        saved = {**lost, **saved}
        self._known = dict(saved)
        return saved

    async def _renew(self) -> None:
        for shard in await self._leases.renew_all(dict(self.held)):
            self.held.pop(shard, None)
            consumer = self.consumers.get(shard)
            if consumer is not None:
                consumer.lose_lease()

    async def _balance(self, group: asyncio.TaskGroup, shards: list[ShardInfo], saved: dict[str, str],
                       live: int) -> None:
        listed = {s.shard_id for s in shards}
        finished = {k for k, v in saved.items() if v == SHARD_END} | _proven_ended(shards, saved)
        # A parent that is no longer listed (past retention) counts as read to its end.
        eligible = [s for s in shards if s.shard_id not in finished
                    and all(p not in listed or p in finished for p in s.parents)]
        target = math.ceil(len(eligible) / max(live, 1))
        mine = sorted(s for s in self.held if s not in self._handoff)
        for extra in mine[target:]:  # above our share: hand off after a final checkpoint
            log.info("lease_handoff", shard=extra, target=target, live_replicas=live)
            if extra in self.consumers:
                self._handoff.add(extra)  # released when its consumer has stopped
                self.consumers[extra].stop()
            else:
                await self._leases.release(extra, self.held.pop(extra))
        by_id = {s.shard_id: s for s in shards}
        for shard in eligible:
            running = self.consumers.get(shard.shard_id)
            if running is not None and shard.closed and running.shard.ending_sequence != shard.ending_sequence:
                running.mark_closed(shard.ending_sequence or "")
            if len(mine) >= target or shard.shard_id in self.held:
                continue
            fence = await self._leases.acquire(shard.shard_id, self._generation or "0")
            if fence is not None:
                self.held[shard.shard_id] = fence
                mine.append(shard.shard_id)
                log.info("lease_acquired", shard=shard.shard_id, epoch=fence.epoch)
        for shard_id, fence in self.held.items():
            if shard_id not in self.consumers and shard_id not in self._handoff and shard_id in by_id:
                self._start(group, by_id[shard_id], fence, saved)
        self._m_leases.set(len(self.held))

    def _start(self, group: asyncio.TaskGroup, shard: ShardInfo, fence: Fence, saved: dict[str, str]) -> None:
        start = self._start_at if shard.shard_id in self._initial else ("TRIM_HORIZON", None)
        consumer = ShardConsumer(
            shard=shard, service=self._service, spec=self._spec, function=self._function,
            checkpoints=self._checkpoints, sender=self._sender, quarantine=self._quarantine, metrics=self._metrics,
            clock=self._clock, settings=self._settings, start=start, checkpoint=saved.get(shard.shard_id),
            fence=fence, on_result=self._record_result, budget=self._budget,
            parked=self._parking(shard_id=shard.shard_id, fence=fence) if self._parking else None)
        self.consumers[shard.shard_id] = consumer
        group.create_task(self._run_consumer(consumer, fence, self._generation), name=f"shard:{shard.shard_id}")

    async def _run_consumer(self, consumer: ShardConsumer, fence: Fence, generation: str | None) -> None:
        shard_id = consumer.shard.shard_id
        try:
            reason = await consumer.run()
        except Exception as exc:  # Redis or AWS failed under it (its lanes' task group wraps them)
            errors = only_broker_errors(exc)
            if errors is None:
                raise
            log.error("shard_consumer_failed", shard=shard_id, error=describe(list(errors)))
            await self._clock.sleep(self._settings.backoff_base_seconds)
            reason = ShutdownReason.REQUESTED
        finally:
            self.consumers.pop(shard_id, None)
            if consumer.checkpointed is not None and generation == self._generation:
                self._known[shard_id] = consumer.checkpointed
        ours = self.held.get(shard_id) == fence  # not a lease taken again since (after a rewind)
        if reason is ShutdownReason.LEASE_LOST:
            if ours:
                self.held.pop(shard_id, None)
        elif reason is ShutdownReason.SHARD_END or shard_id in self._handoff:
            if reason is ShutdownReason.SHARD_END:
                log.info("shard_finished", shard=shard_id)
            self._handoff.discard(shard_id)
            if ours and self.held.pop(shard_id, None) is not None:
                with contextlib.suppress(BrokerError):
                    await self._leases.release(shard_id, fence)
        self._wake.set()  # children may start now; handed-off shards are free; a failed consumer restarts


def _proven_ended(shards: list[ShardInfo], saved: dict[str, str]) -> set[str]:
    """Parents of shards that have a checkpoint: a child starts only after its parents were read
    to their end, so they count as finished even once their own checkpoints are forgotten."""
    return {p for s in shards if s.shard_id in saved for p in s.parents}
