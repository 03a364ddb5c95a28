"""A handler that prints who called it and what it got, and can fail with an error of a given size."""

from __future__ import annotations

import os
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records") or [{}]
    source = records[0].get("eventSource") or records[0].get("EventSource") or "invoke"
    print(f"rid={context.aws_request_id} source={source} tag={event.get('tag', '')}")
    for n in range(int(event.get("lines", 0))):  # output that is still in the pipe when the answer is posted
        print(f"line {context.aws_request_id} {n}")
    if event.get("fail_bytes"):
        raise ValueError("x" * int(event["fail_bytes"]))
    return {"pid": os.getpid(), "request_id": context.aws_request_id}
