"""One shard's state, in one place (as aiokafka keeps a partition's state in one object): the shard
as last listed, its lanes (records of some keys in order, and their open tumbling windows), the
checkpoint tracker and the last checkpoint written, whether it is stopping or lost its lease. The
reader, the lanes' batches and the resolver all work on it; it is also what they do with it:
wait (cut short by ``stop``) and hand records back (which moves the checkpoint)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from broker.batching.checkpoint_tracker import CheckpointTracker
from broker.clock import Clock
from broker.errors import BrokerError
from broker.sources.streams.checkpoints import CheckpointStore
from broker.sources.streams.leases import Fence
from broker.sources.streams.types import Lane
from broker.types import ShardInfo, StreamRecord

log = structlog.get_logger("broker.streams")


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


@dataclass
class ShardActivity:
    """What the status shows of a shard while its consumer runs (set by the resolver)."""

    in_flight: int = 0  # batches being resolved
    iterator_age_ms: float | None = None  # of the last record of the last batch sent
    retrying_since: float | None = None  # epoch s: when the work in hand first failed (None: it did not)
    last_error: dict[str, Any] | None = None  # that failure's errorType, errorMessage and status

    def struggling(self, now: float, error: dict[str, Any]) -> None:
        self.retrying_since = self.retrying_since or now
        self.last_error = error

    def going(self) -> None:
        self.retrying_since = None


class ShardState:
    def __init__(self, shard: ShardInfo, *, lanes: int, checkpoints: CheckpointStore, fence: Fence | None,
                 clock: Clock, checkpoint: str | None) -> None:
        self.shard = shard
        self.lanes = [Lane() for _ in range(lanes)]
        self.tracker = CheckpointTracker()
        self.stopped = asyncio.Event()
        self.lease_lost = False
        self.checkpointed = checkpoint  # the last checkpoint written (or started from)
        self.activity = ShardActivity()
        self._checkpoints = checkpoints
        self._fence = fence
        self._clock = clock
        self._sleepers: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint_lock = asyncio.Lock()
        self._on_stop: list[Callable[[], None]] = []

    @property
    def shard_id(self) -> str:
        return self.shard.shard_id

    def on_stop(self, callback: Callable[[], None]) -> None:
        """``callback()`` when the shard stops (a part that waits on something of its own)."""
        self._on_stop.append(callback)

    def stop(self) -> None:
        """Stop reading and starting batches: every sleep ends (answering False), every lane looks again."""
        self.stopped.set()
        for waker in self._sleepers:
            _wake(waker)
        for lane in self.lanes:
            lane.changed.set()
        for callback in self._on_stop:
            callback()

    def lose_lease(self) -> None:
        """The lease moved on: stop at once and never write a checkpoint again."""
        if not self.lease_lost:
            log.warning("lease_lost", shard=self.shard_id)
        self.lease_lost = True
        self.stop()

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False if stop() arrived. One timer and one future, woken by stop():
        an idle shard pauses once a second, and two tasks under ``asyncio.wait`` cost several
        times the poll itself."""
        if self.stopped.is_set():
            return False
        if self._loop is None:
            self._loop = asyncio.get_running_loop()  # once: each call is a getpid() system call
        waker: asyncio.Future[None] = self._loop.create_future()
        timer = self._clock.call_later(seconds, functools.partial(_wake, waker))
        self._sleepers.add(waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._sleepers.discard(waker)
        return not self.stopped.is_set()

    async def handled(self, records: list[StreamRecord], lane: Lane) -> None:
        """Records handled: checkpointable now, or (in a tumbling window) once the window closes."""
        if lane.window is not None:
            lane.window.held.extend(records)
            return
        for r in records:
            self.tracker.complete(r.seq)
        await self.write_checkpoint()

    async def write_checkpoint(self) -> bool:
        """Write how far every record is handled; False if the lease was lost (now or before).
        One writer at a time, reading the mark inside the lock: the reader and the lanes both
        write, and a slower write of an older mark must never land after a newer one."""
        async with self._checkpoint_lock:
            mark = self.tracker.watermark
            if self.lease_lost:
                return False
            if mark is None or str(mark) == self.checkpointed:
                return True
            value = str(mark)
            try:
                written = await self._checkpoints.put(self.shard_id, value, self._fence)
            except BrokerError as exc:  # kept in memory; the next write carries it
                log.warning("checkpoint_write_failed", sequence=value, error=str(exc))
                return True
            if not written:  # fenced: another replica holds the shard now
                self.lose_lease()
                return False
            self.checkpointed = value
            return True

    async def end(self, value: str) -> bool:
        """The shard is finished (``SHARD_END``): False if fenced."""
        if not await self._checkpoints.put(self.shard_id, value, self._fence):
            self.lose_lease()
            return False
        return True
