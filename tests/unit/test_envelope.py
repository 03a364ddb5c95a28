"""Batch cutting, shared by SQS and stream mappings: BatchSize, the 6 MiB event, tumbling windows."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from broker.batching.envelope import ENVELOPE_BYTES, MAX_PAYLOAD_BYTES, Cut, records_event


@dataclass(frozen=True)
class Rec:
    encoded: bytes
    window: int = 0


def test_a_batch_is_cut_at_batch_size() -> None:
    pending = collections.deque(Rec(b'"%d"' % n) for n in range(7))
    cut: Cut[Rec] = Cut(5)
    cut.take(pending)
    assert [r.encoded for r in cut.records] == [b'"0"', b'"1"', b'"2"', b'"3"', b'"4"']
    assert cut.full
    assert len(pending) == 2


def test_a_batch_is_cut_before_the_record_that_would_take_the_event_to_6_mib() -> None:
    body = MAX_PAYLOAD_BYTES - ENVELOPE_BYTES - 5  # with a 3-byte record after it: 6 MiB less one byte
    big, small, one_more = Rec(b"x" * body), Rec(b"abc"), Rec(b"y")
    pending = collections.deque([big, small, one_more])
    cut: Cut[Rec] = Cut(10)
    cut.take(pending)
    assert cut.records == [big, small]
    assert len(records_event(r.encoded for r in cut.records)) == MAX_PAYLOAD_BYTES - 1
    assert list(pending) == [one_more]
    assert cut.room == 8
    one_byte_more = Rec(b"x" * (body + 1))
    cut = Cut(10)
    cut.take(collections.deque([one_byte_more, small]))
    assert cut.records == [one_byte_more], "that event would be 6 MiB: the limit is below it"


def test_the_first_record_always_goes_in() -> None:
    huge = Rec(b"z" * (MAX_PAYLOAD_BYTES + 1))
    cut: Cut[Rec] = Cut(10)
    cut.take(collections.deque([huge, Rec(b"a")]))
    assert cut.records == [huge]


def test_a_batch_never_spans_two_windows() -> None:
    pending = collections.deque([Rec(b"1", 0), Rec(b"2", 0), Rec(b"3", 1)])
    cut: Cut[Rec] = Cut(10)
    cut.take(pending, same=lambda first, nxt: first.window == nxt.window)
    assert [r.encoded for r in cut.records] == [b"1", b"2"]
    assert [r.encoded for r in pending] == [b"3"]
