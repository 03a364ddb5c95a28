"""Init failures in a row: the backoff before the next environment starts, and the error owed to
the invocation that waited for the environment (a virtual clock)."""

from __future__ import annotations

from broker.runtime.init_failures import InitFailures


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_back_off_doubling_to_the_cap() -> None:
    clock = Clock()
    failures = InitFailures(claim_seconds=10, base=1, cap=8, clock=clock)
    delays = []
    for _ in range(6):
        delays.append(failures.failed(b"e"))
        assert failures.backing_off()
        clock.now += 100  # the backoff ran out before the next failure
    assert delays == [1, 2, 4, 8, 8, 8]
    assert failures.streak == 6


def test_a_failure_during_a_backoff_starts_none_and_a_success_resets() -> None:
    clock = Clock()
    failures = InitFailures(claim_seconds=10, base=1, cap=30, clock=clock)
    assert failures.failed(b"first") == 1
    assert failures.failed(b"second") is None, "one backoff at a time: said once"
    failures.succeeded()
    assert not failures.backing_off()
    assert failures.failed(b"again") == 1, "the streak starts over"


def test_the_error_is_owed_to_one_invocation_then_given_while_backing_off() -> None:
    clock = Clock()
    failures = InitFailures(claim_seconds=10, base=5, cap=30, clock=clock)
    failures.failed(b"import error")
    assert failures.unclaimed()
    assert failures.claim(no_environment_ready=False) == b"import error", "the invocation that waited gets it"
    assert not failures.unclaimed()
    assert failures.claim(no_environment_ready=False) is None, "an environment is ready: wait for it"
    assert failures.claim(no_environment_ready=True) == b"import error", "none ready while backing off"
    clock.now += 6
    assert failures.claim(no_environment_ready=True) is None, "the backoff is over: start one and wait"


def test_an_owed_error_expires_and_a_paid_one_is_not_given_twice() -> None:
    clock = Clock()
    failures = InitFailures(claim_seconds=10, base=1, cap=30, clock=clock)
    failures.failed(b"e")
    failures.paid()
    assert not failures.unclaimed()
    clock.now += 2
    failures.failed(b"later")
    clock.now += 11
    assert not failures.unclaimed(), "nobody came for it within the init timeout"
