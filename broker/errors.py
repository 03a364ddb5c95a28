"""One exception tree for the whole broker.

    BrokerError                      retryable: bool (class attribute, may be overridden per instance)
    ├── ConfigError                  bad config file; carries every issue with its path
    ├── StartupError                 the world does not match the config (queue missing, timeout > visibility)
    ├── ReservationRefused           a reserved concurrency would leave the account under 100 unreserved
    ├── StateStoreError              Redis failed (translated in redis/state.py); retryable
    │   └── StateLost                Redis answered without the broker's keys (flush, stale failover)
    ├── AwsError                     an AWS call failed (translated once, in aws.py)
    │   └── AwsThrottled             throttled / limit exceeded / transient service fault (retryable)
    └── InvokeError                  a target could not be invoked (never a function error: those are results)
        ├── TargetThrottled          429/503 from the target: retried without spending attempts
        └── TargetUnreachable        connection refused/reset, DNS: a system error, retried likewise

Retry code reads ``retryable``; it never lists exception types.
"""

from __future__ import annotations

from dataclasses import dataclass


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""

    retryable: bool = False


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, with the path of the offending value."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(BrokerError):
    """The config file is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ReservationRefused(BrokerError):
    """PutFunctionConcurrency refused: fewer than 100 executions would stay unreserved."""


class StartupError(BrokerError):
    """A configured resource does not exist or contradicts the config."""


class StateStoreError(BrokerError):
    """Redis, where shared state lives, did not answer; the operation may be retried."""

    retryable = True


class StateLost(StateStoreError):
    """Redis answered, but state the broker had written is gone (a consumer group, checkpoints):
    a flush, or a failover to a replica that missed writes. Recreated; counted and logged loudly."""


class AwsError(BrokerError):
    """An AWS API call failed with ``code``."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(f"{code}: {message}")


class AwsThrottled(AwsError):
    """AWS throttled us or had a transient fault; back off and try again."""

    retryable = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=True)


class InvokeError(BrokerError):
    """The target was not invoked (or not reached); the function did not run to a result."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class TargetThrottled(InvokeError):
    """The target refused the work for now (HTTP 429/503, reserved concurrency)."""

    def __init__(self, message: str, *, retry_after: float | None = None, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message, retry_after=retry_after)


class TargetUnreachable(InvokeError):
    """The target could not be reached (connection refused, reset, DNS)."""


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The errors inside (possibly nested) exception groups, or ``[exc]`` for a plain one."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_errors(inner)]
    return [exc]


def only_broker_errors(exc: BaseException) -> list[BrokerError] | None:
    """The leaf errors if every one is a ``BrokerError`` (expected: retry), else None (a bug)."""
    leaves = leaf_errors(exc)
    if all(isinstance(e, BrokerError) for e in leaves):
        return [e for e in leaves if isinstance(e, BrokerError)]
    return None


def describe(errors: list[BaseException]) -> str:
    """One line naming each error: ``Type: message; Type: message``."""
    return "; ".join(f"{type(e).__name__}: {e}" for e in errors)
