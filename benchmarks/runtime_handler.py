"""The handler benchmarks/runtime.py runs in both modes: returns its event."""

from __future__ import annotations

from typing import Any


def handler(event: Any, context: Any) -> Any:
    return event
