"""Tumbling windows of stream mappings: ``TumblingWindowInSeconds`` > 0 (docs/aws-semantics.md,
"Tumbling windows", "Event shapes").

Records fall into fixed windows by their arrival time in the stream; a batch never spans two. Each
invocation carries the window, the ``state`` the function returned last time in that window
(``{}`` at its start), ``shardId`` and ``eventSourceARN``; a response without a ``state`` object is
a failed invocation. When the window ends (a record of a later window comes next, the shard ends,
or no record came for a while after the window's end) a final invocation with no records and
``isFinalInvokeForWindow: true`` hands over the state; only after it succeeds does the checkpoint
pass the window's records, so a restart replays the open window and rebuilds its state. A state
above 1 MB ends the window early (``isWindowTerminatedEarly: true``) and the window goes on with
a fresh state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from broker.batching.envelope import compact, records_event
from broker.destinations.failure_records import iso_s
from broker.types import StreamRecord

MAX_STATE_BYTES = 1024 * 1024


def window_start(arrival: float, seconds: int) -> float:
    return math.floor(arrival / seconds) * seconds


@dataclass
class Window:
    """One lane's open window: its state so far and the records awaiting its final invocation."""

    start: float
    seconds: int
    state: Any = field(default_factory=dict)
    held: list[StreamRecord] = field(default_factory=list)
    terminated_early: bool = False

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def event(self, records: list[StreamRecord], *, shard_id: str, source_arn: str, final: bool = False) -> bytes:
        """Lambda's TimeWindowEvent: ``Records`` then the window fields, in Lambda's order."""
        extra = compact({"window": {"start": iso_s(self.start), "end": iso_s(self.end)}, "state": self.state,
                         "shardId": shard_id, "eventSourceARN": source_arn, "isFinalInvokeForWindow": final,
                         "isWindowTerminatedEarly": self.terminated_early and final})
        return records_event((r.encoded for r in records), extra[1:-1].encode())


def response_state(payload: bytes) -> tuple[bool, Any]:
    """(True, state) if the response is an object with a ``state`` object, else (False, None)."""
    try:
        response = json.loads(payload) if payload.strip() else None
    except ValueError:
        return False, None
    if not isinstance(response, dict) or not isinstance(response.get("state"), dict):
        return False, None
    return True, response["state"]


def state_too_large(state: Any) -> bool:
    return len(compact(state).encode()) > MAX_STATE_BYTES
