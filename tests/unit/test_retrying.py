"""The one retry helper: tries until success, waits what the caller's policy says on the caller's
clock, raises what is not worth another try, gives up past a deadline, and stops when told."""

from __future__ import annotations

import pytest

from broker.retrying import Stopped, retrying


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


class Waits:
    def __init__(self, stop_after: int | None = None) -> None:
        self.seconds: list[float] = []
        self.stop_after = stop_after

    async def __call__(self, seconds: float) -> bool:
        self.seconds.append(seconds)
        return self.stop_after is None or len(self.seconds) < self.stop_after


async def test_it_tries_until_success_waiting_the_policys_delays() -> None:
    call, waits, said = Flaky([TimeoutError(), TimeoutError()]), Waits(), []
    result = await retrying(call, retryable=lambda e: isinstance(e, TimeoutError), delay=lambda n, _: 2.0 ** n,
                            pause=waits, before_wait=lambda e, n, s: said.append((type(e).__name__, n, s)))
    assert result == "done"
    assert call.calls == 3
    assert waits.seconds == [1.0, 2.0]
    assert said == [("TimeoutError", 1, 1.0), ("TimeoutError", 2, 2.0)]


async def test_a_failure_not_worth_retrying_is_raised_at_once() -> None:
    call, waits = Flaky([ValueError("bad input")]), Waits()
    with pytest.raises(ValueError, match="bad input"):
        await retrying(call, retryable=lambda e: isinstance(e, TimeoutError), delay=lambda n, _: 1, pause=waits)
    assert call.calls == 1
    assert waits.seconds == []


async def test_past_the_deadline_the_last_failure_is_raised() -> None:
    call, waits = Flaky([TimeoutError("one"), TimeoutError("two"), TimeoutError("three")]), Waits()
    with pytest.raises(TimeoutError, match="two"):
        await retrying(call, retryable=lambda e: True, delay=lambda n, _: 10, pause=waits,
                       too_late=lambda seconds: sum(waits.seconds) + seconds > 15)
    assert waits.seconds == [10]


async def test_a_stop_while_waiting_ends_the_loop() -> None:
    call, waits = Flaky([TimeoutError()] * 5), Waits(stop_after=2)
    with pytest.raises(Stopped):
        await retrying(call, retryable=lambda e: True, delay=lambda n, _: 1, pause=waits)
    assert call.calls == 2
