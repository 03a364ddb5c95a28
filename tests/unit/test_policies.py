"""Retry backoff: exponential from the base to the cap, Retry-After as a floor."""

from __future__ import annotations

import random

from broker.retrying import backoff_delay


def test_backoff_grows_and_caps() -> None:
    """Delays double per attempt between half and all of base*2^n, never above the cap."""
    rng = random.Random(7)
    delays = [backoff_delay(n, base=1.0, cap=300.0, rng=rng) for n in range(12)]
    for n, d in enumerate(delays):
        ceiling = min(300.0, 2.0 ** n)
        assert ceiling / 2 <= d <= ceiling
    assert delays[-1] >= 150.0


def test_retry_after_is_a_floor() -> None:
    """A target's Retry-After is honoured even when the backoff is shorter."""
    assert backoff_delay(0, base=0.1, cap=1.0, retry_after=5.0) == 5.0

