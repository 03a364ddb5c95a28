"""Inits of a function's execution environments that failed in a row (docs/design.md, "Decisions,
and why": init errors are owed to an invocation, and restarts back off)."""

from __future__ import annotations

import time
from collections.abc import Callable


class InitFailures:
    """Inits that failed in a row: a capped exponential backoff before the next environment
    starts, and the latest error, owed to the invocation that waited for it.

    While backing off with no environment ready, invocations get the latest init error at once, as
    Lambda answers each invocation of a function whose init fails; they are never throttled.
    """

    def __init__(self, *, claim_seconds: float, base: float = 1.0, cap: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._claim_seconds = claim_seconds
        self._base, self._cap, self._clock = base, cap, clock
        self.streak = 0
        self._until = 0.0
        self._latest: bytes | None = None
        self._owed: tuple[bytes, float] | None = None  # an error no invocation has received yet

    def failed(self, body: bytes) -> float | None:
        """Count a failure; the new backoff delay if one starts now, else None (one already runs)."""
        now = self._clock()
        self.streak += 1
        self._latest = body
        self._owed = (body, now)
        if now < self._until:
            return None
        delay = min(self._cap, self._base * 2.0 ** (self.streak - 1))
        self._until = now + delay
        return delay

    def succeeded(self) -> None:
        self.streak, self._until, self._latest, self._owed = 0, 0.0, None, None

    def backing_off(self) -> bool:
        return self._clock() < self._until

    def unclaimed(self) -> bool:
        return self._owed is not None and self._clock() - self._owed[1] < self._claim_seconds

    def paid(self) -> None:
        """The owed error reached an invocation."""
        self._owed = None

    def claim(self, *, no_environment_ready: bool) -> bytes | None:
        """The error an arriving invocation gets instead of waiting, if any."""
        if self.unclaimed():
            assert self._owed is not None
            body, self._owed = self._owed[0], None
            return body
        self._owed = None
        if no_environment_ready and self.backing_off():
            return self._latest
        return None
