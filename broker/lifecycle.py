"""Serving and the drain: a started broker runs its mappings, workers and background loops in one
task group until SIGTERM; then ``/readyz`` fails, sources stop taking work, in-flight batches drain
for up to ``drain_timeout_seconds``, and the rest is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog

from broker.running.tasks import Tasks

log = structlog.get_logger("broker.app")

Background = tuple[str, Coroutine[Any, Any, None]]


async def serve(tasks: Tasks, *, start: Callable[[], None], background: Sequence[Background],
                started: Callable[[], Awaitable[None]], stopping: asyncio.Event, stop: Callable[[], None],
                drain_timeout: float) -> None:
    """``start()`` the keyed tasks, run ``background``, say ``started()``; on ``stopping``, ``stop()``
    the keyed tasks and drain them."""
    async with tasks.serving() as group:
        start()
        loops = [group.create_task(work, name=name) for name, work in background]
        await started()
        await stopping.wait()
        for loop in loops:
            loop.cancel()
        stop()
        await tasks.wait(None, drain_timeout)
    log.info("broker_stopped")


async def periodic(stopping: asyncio.Event, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
    """``step()`` every ``seconds`` until shutdown. The loop watches the stop flag itself:
    redis-py can swallow a cancellation that lands inside one of its calls (redis-py #2028),
    and a background task that ignored its cancel would hold the shutdown forever."""
    while not stopping.is_set():
        await step()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
