"""The one boundary where redis-py errors become ``StateStoreError`` (Redis holds the shared state)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import ParamSpec, TypeVar

from redis.exceptions import RedisError

from broker.errors import StateStoreError

P = ParamSpec("P")
T = TypeVar("T")


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate a coroutine that talks to Redis: its Redis and socket errors become StateStoreError."""
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise StateStoreError(f"redis: {type(exc).__name__}: {exc}") from exc
    return wrapper


def lua(package: str, name: str) -> str:
    """A Lua script shipped in ``<package>/scripts/`` (each starts with its KEYS/ARGV contract)."""
    return resources.files(package).joinpath("scripts", name).read_text(encoding="utf-8")
