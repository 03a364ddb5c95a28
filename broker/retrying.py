"""The one way the broker waits out a fault: call again after a backoff, on tenacity.

Every loop that retries what failed for a reason outside the broker (AWS unreachable, Redis away,
a throttled target, a destination that refuses) goes through ``retrying``: the caller says which
failures are worth another try, how long to wait before attempt n (``backoff_delay``), how to
wait (its clock, cut short by its stop: ``pause`` answers False, and ``Stopped`` ends the loop), what
to say before each wait, and, where a deadline applies, when the next wait would come too late (the
failure is then raised as it is).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

T = TypeVar("T")


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential from ``base`` to ``cap``
    with full jitter on the upper half; a target's ``Retry-After`` is a floor."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    delay = ceiling / 2 + (rng or random).random() * ceiling / 2
    return float(max(delay, retry_after or 0.0))


class Stopped(Exception):
    """The caller stopped while a retry was waiting."""


class _GaveUp(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def retrying(call: Callable[[], Awaitable[T]], *, retryable: Callable[[BaseException], bool],
                   delay: Callable[[int, BaseException], float], pause: Callable[[float], Awaitable[bool]],
                   before_wait: Callable[[BaseException, int, float], None] | None = None,
                   too_late: Callable[[float], bool] | None = None) -> T:
    """``call()`` until it succeeds. A failure that ``retryable`` accepts waits ``delay(n, failure)``
    (n = failures so far, from 0) through ``pause`` and is tried again; any other failure, or one
    whose next wait ``too_late`` refuses, is raised as it is; ``Stopped`` if ``pause`` says stop."""

    try:  # the happy path is one call, not a retry loop (an async event takes this path each time)
        return await call()
    except Exception as failure:  # the caller's retryable() decides
        if not retryable(failure):
            raise
        first = failure
    await _wait(first, 0, delay=delay, pause=pause, before_wait=before_wait, too_late=too_late)

    def wait(state: RetryCallState) -> float:  # the attempts after the first, counted from 1
        assert state.outcome is not None
        error = state.outcome.exception()
        assert isinstance(error, Exception)
        seconds = delay(state.attempt_number, error)
        if too_late is not None and too_late(seconds):
            raise _GaveUp(error)
        if before_wait is not None:
            before_wait(error, state.attempt_number + 1, seconds)
        return seconds

    async def sleep(seconds: float) -> None:
        if not await pause(seconds):
            raise Stopped

    try:
        async for attempt in AsyncRetrying(retry=retry_if_exception(retryable), wait=wait, sleep=sleep, reraise=True):
            with attempt:
                return await call()
    except _GaveUp as gave_up:
        raise gave_up.error from None
    raise AssertionError("unreachable: tenacity either returns the result or raises")  # pragma: no cover


async def _wait(error: Exception, failures: int, *, delay: Callable[[int, BaseException], float],
                pause: Callable[[float], Awaitable[bool]],
                before_wait: Callable[[BaseException, int, float], None] | None,
                too_late: Callable[[float], bool] | None) -> None:
    """The wait after the first failure (tenacity takes the attempts after it)."""
    seconds = delay(failures, error)
    if too_late is not None and too_late(seconds):
        raise error
    if before_wait is not None:
        before_wait(error, failures + 1, seconds)
    if not await pause(seconds):
        raise Stopped
