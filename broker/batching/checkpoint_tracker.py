"""Which sequence number a shard may be checkpointed at, when records finish out of order.

Records enter in stream order; lanes (ParallelizationFactor) finish them in any order. The
checkpoint is the last record such that it and every record before it are finished.
"""

from __future__ import annotations

import collections


class CheckpointTracker:
    def __init__(self) -> None:
        self._order: collections.deque[int] = collections.deque()
        self._done: set[int] = set()
        self._watermark: int | None = None

    def add(self, seq: int) -> None:
        """A record was read (in stream order)."""
        self._order.append(seq)

    def complete(self, seq: int) -> None:
        """A record is fully handled (succeeded, filtered out, or its failure path finished)."""
        self._done.add(seq)
        while self._order and self._order[0] in self._done:
            head = self._order.popleft()
            self._done.discard(head)
            self._watermark = head

    @property
    def watermark(self) -> int | None:
        """The sequence number to checkpoint at, or None if nothing is finished yet."""
        return self._watermark

    @property
    def pending(self) -> int:
        """Records read but not yet finished."""
        return len(self._order)
