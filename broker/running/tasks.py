"""The long-running tasks of a serving broker, by key (``mapping:<uuid>``, ``worker:<name>``), in
one task group: started while it serves, stopped one by one (a reload) or all at once (the drain)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog

from broker.errors import BrokerError

log = structlog.get_logger("broker.app")


class Tasks:
    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def open(self) -> bool:
        """The broker serves: tasks may be started."""
        return self._group is not None

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[asyncio.TaskGroup]:
        """The task group of the serving broker; it ends once every task has ended."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                yield group
            finally:
                self._group = None

    def spawn(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        if self._group is None:
            work.close()
            raise BrokerError(f"{key} cannot start: the broker is not serving")
        task = self._group.create_task(work, name=key)
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)

    async def wait(self, keys: list[str] | None, grace: float) -> None:
        """Wait up to ``grace`` seconds for these tasks (None: all) to end, then cancel what is left."""
        tasks = [t for k, t in self._tasks.items() if keys is None or k in keys]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            if keys is None:
                log.warning("drain_timeout", task=task.get_name(), drain_timeout_seconds=grace)
            task.cancel()
