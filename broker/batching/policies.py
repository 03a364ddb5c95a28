"""Pure retry decisions, shared by every path that retries."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential from ``base`` to ``cap``
    with full jitter on the upper half; a target's ``Retry-After`` is a floor."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    delay = ceiling / 2 + (rng or random).random() * ceiling / 2
    return float(max(delay, retry_after or 0.0))
