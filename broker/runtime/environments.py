"""An execution environment and the invocation it runs, as the dispatcher keeps them."""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass, field

from broker.runtime.processes import ManagedProcess
from broker.types import InvokeContext, InvokeResult

TAIL_BYTES = 4096


class EnvState(enum.StrEnum):
    INITIALIZING = "initializing"
    IDLE = "idle"
    BUSY = "busy"


@dataclass(eq=False)
class Invocation:
    payload: bytes
    ctx: InvokeContext
    timeout: float
    result: asyncio.Future[InvokeResult]
    handed_at: float = 0.0
    init_seconds: float | None = None
    log: list[str] = field(default_factory=list)
    tags: dict[str, object] = field(default_factory=dict)  # the caller's log context (mapping, shard, ...)

    def finish(self, payload: bytes, error: str | None, now: float) -> bool:
        if self.result.done():
            return False
        self.result.set_result(InvokeResult(payload, error, max(0.0, now - (self.handed_at or now)),
                                            log=self.tail()))
        return True

    def tail(self) -> str:
        return "".join(self.log)[-TAIL_BYTES:]


@dataclass(eq=False)
class Environment:
    key: str
    started: float
    process: ManagedProcess | None = None  # None: external (any process that speaks the Runtime API)
    state: EnvState = EnvState.INITIALIZING
    current: Invocation | None = None
    idle_since: float = 0.0
    cold: bool = True  # its next invocation is its first
    init_failed: bool = False
    init_seconds: float | None = None  # how long its init took (set at its first ``next``)
    timer: asyncio.TimerHandle | None = None


def error_body(error_type: str, message: str) -> bytes:
    """Lambda's error object, as a runtime posts it and an invocation answers it."""
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()
