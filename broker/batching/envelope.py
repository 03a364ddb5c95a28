"""The event Lambda sends a source's batch in, and the size it must fit (docs/aws-semantics.md,
"Payload size and batch cutting"): ``{"Records": [...]}`` built from records serialized once, and
batches cut to ``BatchSize`` records and 6 MiB."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # a synchronous invocation's payload, serialized event and all
ENVELOPE_BYTES = len(b'{"Records":[]}')
compact = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every record, not one each


def records_event(encoded: Iterable[bytes], extra: bytes = b"") -> bytes:
    """``{"Records": [...]}`` from records already serialized; ``extra`` adds fields after them (a
    serialized object's members without its braces, as a tumbling window's)."""
    return b'{"Records":[' + b",".join(encoded) + (b"]," + extra + b"}" if extra else b"]}")


class Encoded(Protocol):
    @property
    def encoded(self) -> bytes:
        """The record as it goes into the event, serialized once."""


R = TypeVar("R", bound=Encoded)


class Cut(Generic[R]):
    """A batch being cut as Lambda cuts it: at ``BatchSize`` records, or before the record that
    would take the event past ``MAX_PAYLOAD_BYTES`` (the first record always goes in)."""

    def __init__(self, batch_size: int) -> None:
        self.records: list[R] = []
        self._size = ENVELOPE_BYTES
        self._batch_size = batch_size

    @property
    def full(self) -> bool:
        return len(self.records) >= self._batch_size

    @property
    def room(self) -> int:
        """Records the batch may still take."""
        return self._batch_size - len(self.records)

    def take(self, pending: collections.deque[R], same: Callable[[R, R], bool] | None = None) -> None:
        """Move records from the head of ``pending`` while they fit (and, with ``same``, while
        ``same(first, record)`` holds: a batch never spans two tumbling windows)."""
        while pending and not self.full:
            nxt = pending[0]
            if self.records and (self._size + len(nxt.encoded) + 1 > MAX_PAYLOAD_BYTES
                                 or (same is not None and not same(self.records[0], nxt))):
                return
            self.records.append(pending.popleft())
            self._size += len(nxt.encoded) + 1
