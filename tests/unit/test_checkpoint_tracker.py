"""The checkpoint only passes a record when it and everything before it are finished."""

from __future__ import annotations

from broker.batching.checkpoint_tracker import CheckpointTracker


def test_out_of_order_completion_waits_for_the_gap() -> None:
    """Lanes finishing out of order do not move the checkpoint past an unfinished record."""
    t = CheckpointTracker()
    for seq in (10, 11, 12, 13):
        t.add(seq)
    t.complete(12)
    t.complete(13)
    assert t.watermark is None
    t.complete(10)
    assert t.watermark == 10
    t.complete(11)
    assert t.watermark == 13
    assert t.pending == 0


def test_filtered_records_pass_immediately() -> None:
    """A record completed as soon as it is read (filtered out) advances the mark if nothing precedes it."""
    t = CheckpointTracker()
    t.add(1)
    t.complete(1)
    assert t.watermark == 1
    t.add(2)
    t.add(3)
    t.complete(3)
    assert t.watermark == 1
