"""A virtual clock for unit tests: time moves only when something sleeps on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class VirtualClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """The time passes at once; other tasks get their turn."""
        self.now += seconds
        await asyncio.sleep(0)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        raise NotImplementedError("the code under test sleeps through clock.sleep")
