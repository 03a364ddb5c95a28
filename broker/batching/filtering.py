"""Lambda event filtering (docs/aws-semantics.md, "Event filtering"): EventBridge-style patterns over event records.

A pattern is a JSON object. Keys are ANDed; a list of values is ORed; ``$or`` ORs sub-patterns.
Leaf matchers: literals (string, number, null; numbers compared by their JSON text, so 300 and
300.0 differ, as AWS documents), ``equals-ignore-case``, ``anything-but`` (literal or list),
``numeric`` (up to two comparisons), ``exists``, ``prefix``, ``suffix``. Operators AWS does not
document for Lambda (``wildcard``, ``cidr``, ``anything-but`` with a nested operator) are rejected
when the pattern is compiled, so a bad pattern fails at config load, never at run time.

The data key (SQS ``body``, Kinesis ``data``, DynamoDB ``dynamodb``) is matched against its
decoded JSON when the data is JSON; the format rules (JSON or plain data and pattern) live in ``RecordFilter``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_MISSING: Any = object()
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
INVALID_PATTERN = "Invalid filter pattern definition."

LeafTest = Callable[[Any], bool]


class FilterPatternError(ValueError):
    """The pattern is not valid; the message is AWS's wording plus what was wrong."""


def _bad(why: str) -> FilterPatternError:
    return FilterPatternError(f"{INVALID_PATTERN} ({why})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _literal_key(value: Any) -> str:
    return json.dumps(value)


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled object pattern: per-key tests (a nested node or leaf tests) and $or branches."""

    fields: tuple[tuple[str, _Node | tuple[LeafTest, ...]], ...]
    any_of: tuple[_Node, ...] = ()

    def matches(self, event: Any) -> bool:
        obj = event if isinstance(event, dict | _WithData) else {}
        for key, test in self.fields:
            value = obj.get(key, _MISSING)
            if isinstance(test, _Node):
                if value is _MISSING:
                    value = {}
                if not isinstance(value, dict) or not test.matches(value):
                    return False
            elif not _leaf_matches(test, value):
                return False
        return not self.any_of or any(branch.matches(event) for branch in self.any_of)


def _leaf_matches(tests: tuple[LeafTest, ...], value: Any) -> bool:
    # Arrays in the event match when any element matches (EventBridge semantics).
    if isinstance(value, list):
        return any(t(v) for v in value for t in tests) if value else any(t(_MISSING) for t in tests)
    return any(t(value) for t in tests)


def compile_pattern(text: str) -> _Node:
    """Compile one ``Pattern`` string; raise FilterPatternError if it is not a valid pattern."""
    try:
        pattern = json.loads(text, object_pairs_hook=dict)  # duplicate keys: the last one wins
    except ValueError as exc:
        raise _bad("not JSON") from exc
    if not isinstance(pattern, dict):
        raise _bad("a pattern must be a JSON object")
    return _compile_object(pattern)


def _compile_object(pattern: dict[str, Any]) -> _Node:
    fields: list[tuple[str, _Node | tuple[LeafTest, ...]]] = []
    any_of: list[_Node] = []
    for key, value in pattern.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2 or not all(
                isinstance(b, dict) for b in value
            ):
                raise _bad("$or takes a list of at least two objects")
            any_of.extend(_compile_object(b) for b in value)
        elif isinstance(value, dict):
            fields.append((key, _compile_object(value)))
        elif isinstance(value, list):
            if not value:
                raise _bad(f"empty list for {key!r}")
            fields.append((key, tuple(_compile_leaf(v) for v in value)))
        else:
            raise _bad(f"{key!r} must map to an object or a list of values")
    return _Node(tuple(fields), tuple(any_of))


def _compile_leaf(item: Any) -> LeafTest:
    if item is None or isinstance(item, str | bool) or _is_number(item):
        expected = _literal_key(item)
        return lambda v: v is not _MISSING and not isinstance(v, dict) and _literal_key(v) == expected
    if not isinstance(item, dict) or len(item) != 1:
        raise _bad(f"unsupported matcher {json.dumps(item)}")
    ((op, arg),) = item.items()
    builder = _OPERATORS.get(op)
    if builder is None:
        raise _bad(f"unsupported operator {op!r}")
    return builder(arg)


def _op_prefix(arg: Any) -> LeafTest:
    if not isinstance(arg, str):
        raise _bad("prefix takes a string")
    return lambda v: isinstance(v, str) and v.startswith(arg)


def _op_suffix(arg: Any) -> LeafTest:
    if not isinstance(arg, str):
        raise _bad("suffix takes a string")
    return lambda v: isinstance(v, str) and v.endswith(arg)


def _op_equals_ignore_case(arg: Any) -> LeafTest:
    if not isinstance(arg, str):
        raise _bad("equals-ignore-case takes a string")
    folded = arg.casefold()
    return lambda v: isinstance(v, str) and v.casefold() == folded


def _op_exists(arg: Any) -> LeafTest:
    if not isinstance(arg, bool):
        raise _bad("exists takes true or false")
    # exists works on leaves only: a key whose value is an object counts as absent, so
    # exists:true never matches it and exists:false does (as recorded on AWS for DynamoDB images).
    if arg:
        return lambda v: v is not _MISSING and not isinstance(v, dict)
    return lambda v: v is _MISSING or isinstance(v, dict)


def _op_anything_but(arg: Any) -> LeafTest:
    values = arg if isinstance(arg, list) else [arg]
    if not values or not all(v is None or isinstance(v, str) or _is_number(v) for v in values):
        raise _bad("anything-but takes a string, a number or a list of them")
    excluded = {_literal_key(v) for v in values}
    return lambda v: v is not _MISSING and not isinstance(v, dict) and _literal_key(v) not in excluded


def _op_numeric(arg: Any) -> LeafTest:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise _bad("numeric takes [op, number] or [op, number, op, number]")
    checks: list[tuple[Callable[[float, float], bool], float]] = []
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise _bad(f"bad numeric comparison {op!r} {bound!r}")
        checks.append((_NUMERIC_OPS[op], float(bound)))
    if len(checks) == 2 and (arg[0] not in (">", ">=") or arg[2] not in ("<", "<=")):
        raise _bad("a numeric range is [>|>=, low, <|<=, high]")
    return lambda v: _is_number(v) and all(test(float(v), b) for test, b in checks)


_OPERATORS: dict[str, Callable[[Any], LeafTest]] = {
    "prefix": _op_prefix,
    "suffix": _op_suffix,
    "equals-ignore-case": _op_equals_ignore_case,
    "exists": _op_exists,
    "anything-but": _op_anything_but,
    "numeric": _op_numeric,
}


def _data_pattern_kind(text: str, data_key: str) -> str:
    """'json' if the pattern tests the data key with an object, 'plain' with a list, else 'none'."""
    pattern = json.loads(text)
    value = pattern.get(data_key, _MISSING)
    if value is _MISSING:
        return "none"
    return "json" if isinstance(value, dict) else "plain"


class _WithData:
    """A record seen with its data key replaced by the decoded data (no copy of the record)."""

    __slots__ = ("_data", "_key", "_record")

    def __init__(self, record: dict[str, Any], key: str, data: Any) -> None:
        self._record, self._key, self._data = record, key, data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data if key == self._key else self._record.get(key, default)


@dataclass(frozen=True)
class RecordFilter:
    """The ORed filters of one mapping, with the data-format rules of docs/aws-semantics.md, "Event filtering"

    ``decode`` turns a record's raw data into (decoded value, is_json). A record whose data format
    disagrees with what a filter expects (JSON vs plain string) never matches that filter.
    """

    data_key: str
    filters: tuple[tuple[_Node, str], ...]  # (compiled pattern, data pattern kind)

    @classmethod
    def compile(cls, patterns: Sequence[str], data_key: str) -> RecordFilter | None:
        if not patterns:
            return None
        return cls(data_key, tuple((compile_pattern(p), _data_pattern_kind(p, data_key))
                                   for p in patterns))

    def matches(self, record: dict[str, Any], data: Any, data_is_json: bool) -> bool:
        """``data`` is the decoded data value (JSON object or plain string)."""
        view = _WithData(record, self.data_key, data)
        for node, kind in self.filters:
            if kind == "json" and not data_is_json:
                continue
            if kind == "plain" and data_is_json:
                continue
            if node.matches(view):
                return True
        return False


def decode_json_object(text: str) -> tuple[Any, bool]:
    """(parsed object, True) if ``text`` is a JSON object, else (text, False)."""
    if text[:1] not in ("{", " ", "\n", "\t", "\r"):
        return text, False
    try:
        value = json.loads(text)
    except ValueError:
        return text, False
    return (value, True) if isinstance(value, dict) else (text, False)
