"""Request bodies as Lambda reads them: UTF-8 JSON with finite numbers only. Python's json module
accepts ``NaN``, ``Infinity`` and numbers that overflow to infinity; Lambda's parser does not, and
such a value must not reach a target or a config as something it cannot round-trip."""

from __future__ import annotations

import json
import math
from typing import Any


class BodyError(ValueError):
    """The body is not UTF-8 JSON with finite numbers; the message says what is wrong."""


def _no_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"the number {text[:40]} is out of range")
    return value


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; BodyError for bad UTF-8, bad JSON, NaN/Infinity or an overflow."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"Invalid UTF-8 at byte {exc.start}") from exc
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except BodyError:
        raise
    except ValueError as exc:
        raise BodyError(str(exc)) from exc
