"""Handlers that misbehave on purpose: sleep past the timeout, exit mid-invocation, report who ran."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

CALLS = 0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global CALLS  # noqa: PLW0603 - module state is per execution environment
    CALLS += 1
    marks = Path(os.environ.get("MARK_DIR", "."))
    if event.get("sleep"):
        (marks / f"started-{event['id']}").write_text(str(os.getpid()))
        time.sleep(event["sleep"])
        (marks / f"finished-{event['id']}").write_text(str(os.getpid()))  # must never happen past the timeout
    if event.get("exit"):
        os._exit(3)
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    print(f"handled {event.get('id')} in {os.getpid()}")
    return {"pid": os.getpid(), "calls": CALLS, "function": context.function_name,
            "log_group": context.log_group_name, "log_stream": context.log_stream_name,
            "memory": context.memory_limit_in_mb, "remaining_ms": context.get_remaining_time_in_millis(),
            "request_id": context.aws_request_id, "trace": os.environ.get("_X_AMZN_TRACE_ID", "")}
