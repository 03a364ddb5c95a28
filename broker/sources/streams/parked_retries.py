"""Trying parked keys again (``IsolateFailingKeys``): each key from its oldest record, one try at a
time, the next try of a key after the stream backoff for the attempts its record has spent. A
record delivered or given up (``BatchResolver.resolve_parked``: MaximumRetryAttempts and
MaximumRecordAgeInSeconds per record, then the quarantine and the destination) leaves, and its
key goes on with its next record at once; a key with none left is no longer parked. Keys take
turns by due time; the shard's other keys are not held up by any of this."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from broker.errors import BrokerError
from broker.retrying import Stopped as Waiting
from broker.retrying import retrying
from broker.sources.streams.batch_resolver import BatchResolver, Stopped
from broker.sources.streams.parking import ParkedKeys
from broker.sources.streams.shard_state import ShardState

log = structlog.get_logger("broker.streams")


class ParkedRetries:
    def __init__(self, parked: ParkedKeys, *, resolver: BatchResolver, shard: ShardState,
                 finished: Callable[[], bool]) -> None:
        self._parked = parked
        self._resolver = resolver
        self._shard = shard
        self._finished = finished  # the shard's lanes are done: with nothing parked, so is this
        shard.on_stop(parked.changed.set)

    async def run(self) -> None:
        parked = self._parked
        try:
            while not self._shard.stopped.is_set():
                due = parked.next_due()
                if due is None and self._finished() and not parked.keys:
                    return
                if due is None or due[1] > 0:
                    parked.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(parked.changed.wait(), None if due is None else due[1])
                    continue
                await self._try(due[0])
        except Stopped:
            return

    async def _try(self, key: str) -> None:
        parked = self._parked
        state = parked.keys[key]
        done, answer = await self._resolver.resolve_parked(state.records[0], attempts=state.attempts,
                                                           last=state.last)
        if done:
            record = state.records[0]
            written = await self._until_stored(lambda: parked.settle(key))
            if written and not parked.holds(key):
                log.info("key_unparked", key=key, last=record.sequence)
            return
        attempts = state.attempts + (1 if answer is not None else 0)
        await self._until_stored(lambda: parked.failed_again(
            key, attempts, answer or state.last, retry_in=self._resolver.backoff(max(0, attempts - 1))))

    async def _until_stored(self, write: Callable[[], Awaitable[bool]]) -> bool:
        """A parked key's write, retried while Redis is away; False (and the shard stops) if the
        lease was lost."""
        try:
            written = await retrying(write, pause=self._shard.sleep,
                                     retryable=lambda e: isinstance(e, BrokerError) and e.retryable,
                                     delay=lambda n, _: self._resolver.backoff(n),
                                     before_wait=lambda e, _n, _s: log.warning("parking_unavailable", error=str(e)))
        except Waiting as exc:
            raise Stopped from exc
        if not written:
            self._shard.lose_lease()
            raise Stopped
        return True
