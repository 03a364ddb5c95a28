"""The event Lambda sends a source's batch in, and the size it must fit (docs/aws-semantics.md,
"Payload size and batch cutting"): ``{"Records": [...]}`` built from records serialized once."""

from __future__ import annotations

import json
from collections.abc import Iterable

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # a synchronous invocation's payload, serialized event and all
ENVELOPE_BYTES = len(b'{"Records":[]}')
compact = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every record, not one each


def records_event(encoded: Iterable[bytes], extra: bytes = b"") -> bytes:
    """``{"Records": [...]}`` from records already serialized; ``extra`` adds fields after them (a
    serialized object's members without its braces, as a tumbling window's)."""
    return b'{"Records":[' + b",".join(encoded) + (b"]," + extra + b"}" if extra else b"]}")
