"""Writes every event it gets to $RECORD_FILE (one JSON line each) and reports its process."""

from __future__ import annotations

import json
import os
from typing import Any


def handler(event: Any, context: Any) -> dict[str, Any]:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"event": event, "pid": os.getpid(), "request_id": context.aws_request_id}) + "\n")
    return {"pid": os.getpid()}
