"""Reserved concurrency per function: the config file's ``ReservedConcurrentExecutions``, or what
Lambda's concurrency API (PutFunctionConcurrency / DeleteFunctionConcurrency; docs/aws-semantics.md,
"Concurrency") set, shared by every replica through Redis.

    {broker}:reserved-concurrency   hash  function -> a number, or "none" after a delete

A function without an entry keeps the config file's value. Replicas re-read the hash every
second; the replica that served the API call applies it at once. Permit pools read the
reservations at acquire time, so a change applies to the next invocation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from broker.concurrency.permits import ACCOUNT_POOL, ACCOUNT_REASON, RESERVED_REASON, Pool
from broker.config.models import FunctionConfig
from broker.config.rules import MIN_UNRESERVED_CONCURRENCY
from broker.errors import BrokerError, ReservationRefused
from broker.redis import keys
from broker.redis.client import RedisClient, raw
from broker.redis.state import translated

log = structlog.get_logger("broker.permits")
KEY = keys.RESERVED_CONCURRENCY
_NONE = "none"


class Reservations:
    def __init__(self, redis: RedisClient, functions: Callable[[], Mapping[str, FunctionConfig]],
                 account_limit: Callable[[], int]) -> None:
        self._redis = redis
        self._functions = functions  # the current config's functions (a reload applies at once)
        self._account_limit = account_limit
        self._overrides: dict[str, int | None] = {}
        self._pools: dict[str, Pool] = {}  # by function; emptied when a reservation, the config or the limit changes
        self._pools_of: tuple[object, int] | None = None  # (the config's functions, the account limit) they are for

    def reserved(self, function: str) -> int | None:
        if function in self._overrides:
            return self._overrides[function]
        config = self._functions().get(function)
        return config.ReservedConcurrentExecutions if config else None

    def pool(self, function: str) -> Pool:
        """The permit pool of ``function`` now: its own if it reserves concurrency, else the
        account's unreserved pool (read at acquire time, so a reload or an API change applies at once;
        kept while neither the config, the overrides nor the account's limit changed)."""
        functions, limit = self._functions(), self._account_limit()
        if self._pools_of is None or functions is not self._pools_of[0] or limit != self._pools_of[1]:
            self._pools.clear()
            self._pools_of = (functions, limit)
        pool = self._pools.get(function)
        if pool is None:
            pool = self._pools[function] = self._pool(function)
        return pool

    def _pool(self, function: str) -> Pool:
        reserved = self.reserved(function)
        if reserved is not None:
            return Pool(keys.function_permits(function), reserved, RESERVED_REASON)
        return Pool(ACCOUNT_POOL, self.unreserved(), ACCOUNT_REASON)

    def unreserved(self, without: str | None = None) -> int:
        """The account's executions not reserved by any function (``without`` one of them)."""
        return self._account_limit() - sum(self.reserved(name) or 0 for name in self._functions() if name != without)

    async def refresh(self) -> None:
        """Re-read what the API set (on a Redis error keep what was read last)."""
        try:
            raw = await self._read()
        except BrokerError as exc:
            log.warning("reservations_refresh_failed", error=str(exc))
            return
        overrides = {k.decode(): None if v.decode() == _NONE else int(v) for k, v in raw.items()}
        if overrides != self._overrides:
            self._overrides = overrides
            self._pools.clear()

    @translated
    async def _read(self) -> dict[bytes, bytes]:
        return {raw(k): raw(v) for k, v in (await self._redis.hgetall(KEY)).items()}

    @translated
    async def put(self, function: str, reserved: int) -> None:
        if self.unreserved(without=function) - reserved < MIN_UNRESERVED_CONCURRENCY:
            raise ReservationRefused(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED_CONCURRENCY}].")
        await self._redis.hset(KEY, function, str(reserved))
        self._overrides[function] = reserved
        self._pools.clear()

    @translated
    async def delete(self, function: str) -> None:
        await self._redis.hset(KEY, function, _NONE)
        self._overrides[function] = None
        self._pools.clear()
