"""The Powertools pattern: a module-level BatchProcessor, as AWS documents it. Safe only when each
environment runs one invocation at a time. Writes what it processed to $RECORD_FILE."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: Any) -> None:
    body = record.body
    if body.startswith("bad"):
        raise ValueError(f"cannot process {body}")
    time.sleep(float(os.environ.get("RECORD_SLEEP_SECONDS", "0.02")))  # long enough for batches to overlap
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"body": body, "pid": os.getpid()}) + "\n")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
