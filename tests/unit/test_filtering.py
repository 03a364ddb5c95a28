"""Lambda event filtering: every operator of docs/aws-semantics.md, "Event filtering" and the body-format tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.batching.filtering import FilterPatternError, RecordFilter, compile_pattern, decode_json_object


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return compile_pattern(json.dumps(pattern)).matches(event)


@pytest.mark.parametrize(("pattern", "event", "expected"), [
    # null and empty string
    ({"UserID": [None]}, {"UserID": None}, True),
    ({"UserID": [None]}, {"UserID": "x"}, False),
    ({"UserID": [None]}, {}, False),
    ({"LastName": [""]}, {"LastName": ""}, True),
    ({"LastName": [""]}, {"LastName": "x"}, False),
    # equals, OR within a field, AND across fields
    ({"Name": ["Alice"]}, {"Name": "Alice"}, True),
    ({"Name": ["Alice"]}, {"Name": "alice"}, False),
    ({"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Debit"}, True),
    ({"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Cash"}, False),
    ({"a": ["1"], "b": ["2"]}, {"a": "1", "b": "2"}, True),
    ({"a": ["1"], "b": ["2"]}, {"a": "1", "b": "3"}, False),
    # equals-ignore-case
    ({"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, True),
    ({"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "bob"}, False),
    # $or across fields
    ({"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}, {"Day": "Monday"}, True),
    ({"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}, {"Day": "Sunday", "Location": "Paris"}, False),
    # anything-but
    ({"Weather": [{"anything-but": ["Raining"]}]}, {"Weather": "Sunny"}, True),
    ({"Weather": [{"anything-but": ["Raining"]}]}, {"Weather": "Raining"}, False),
    ({"Weather": [{"anything-but": "Raining"}]}, {"Weather": "Raining"}, False),
    ({"Weather": [{"anything-but": ["Raining"]}]}, {}, False),
    # numeric
    ({"Price": [{"numeric": ["=", 100]}]}, {"Price": 100}, True),
    ({"Price": [{"numeric": ["=", 100]}]}, {"Price": 101}, False),
    ({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 20}, True),
    ({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 10}, False),
    ({"Price": [{"numeric": [">=", 10]}]}, {"Price": "15"}, False),
    ({"Price": [{"numeric": ["<", 10]}]}, {"Price": 9.5}, True),
    # exists (leaves only)
    ({"ProductName": [{"exists": True}]}, {"ProductName": "x"}, True),
    ({"ProductName": [{"exists": True}]}, {}, False),
    ({"ProductName": [{"exists": False}]}, {}, True),
    ({"ProductName": [{"exists": False}]}, {"ProductName": "x"}, False),
    ({"Product": [{"exists": True}]}, {"Product": {"name": "x"}}, False),
    ({"Product": [{"exists": False}]}, {"Product": {"name": "x"}}, True),  # an object counts as absent
    ({"dynamodb": {"NewImage": {"a": [{"exists": False}]}}}, {"dynamodb": {"NewImage": {"a": {"S": "v"}}}}, True),
    ({"dynamodb": {"NewImage": {"a": [{"exists": False}]}}}, {"dynamodb": {"NewImage": {}}}, True),
    ({"dynamodb": {"NewImage": {"a": {"S": [{"exists": False}]}}}}, {"dynamodb": {"NewImage": {"a": {"S": "v"}}}}, False),
    # prefix / suffix
    ({"Region": [{"prefix": "us-"}]}, {"Region": "us-east-1"}, True),
    ({"Region": [{"prefix": "us-"}]}, {"Region": "eu-west-1"}, False),
    ({"FileName": [{"suffix": ".png"}]}, {"FileName": "a.png"}, True),
    ({"FileName": [{"suffix": ".png"}]}, {"FileName": "a.jpg"}, False),
    # numbers compare by their JSON text: 300 and 300.0 differ
    ({"n": [300]}, {"n": 300}, True),
    ({"n": [300]}, {"n": 300.0}, False),
    ({"n": ["300"]}, {"n": 300}, False),
    # nested objects and arrays in the event
    ({"body": {"type": ["order"]}}, {"body": {"type": "order"}}, True),
    ({"body": {"type": ["order"]}}, {"body": "order"}, False),
    ({"tags": ["b"]}, {"tags": ["a", "b"]}, True),
    ({"tags": ["c"]}, {"tags": ["a", "b"]}, False),
])
def test_operator(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    """Each operator matches exactly what docs/aws-semantics.md, "Event filtering" says."""
    assert matches(pattern, event) is expected


@pytest.mark.parametrize("pattern", [
    "not json",
    "[]",
    '{"a": "x"}',
    '{"a": []}',
    '{"a": [{"wildcard": "x*"}]}',
    '{"a": [{"cidr": "10.0.0.0/24"}]}',
    '{"a": [{"anything-but": {"prefix": "x"}}]}',
    '{"a": [{"numeric": [">", "ten"]}]}',
    '{"a": [{"numeric": ["<", 5, ">", 1]}]}',
    '{"a": [{"exists": "yes"}]}',
    '{"a": [{"prefix": 1}]}',
    '{"$or": [{"a": ["1"]}]}',
    '{"a": [{"prefix": "x", "suffix": "y"}]}',
])
def test_invalid_patterns_are_rejected(pattern: str) -> None:
    """Bad syntax and operators Lambda does not document fail at compile (config load) time."""
    with pytest.raises(FilterPatternError, match=r"^Invalid filter pattern definition\."):
        compile_pattern(pattern)


def test_duplicate_keys_last_wins() -> None:
    """Duplicate keys in a pattern: the last one wins."""
    node = compile_pattern('{"a": ["1"], "a": ["2"]}')
    assert node.matches({"a": "2"})
    assert not node.matches({"a": "1"})


@pytest.mark.parametrize(("body", "pattern", "expected"), [
    ("hello", '{"body": ["hello"]}', True),           # plain body, plain pattern: filter normally
    ("hello", '{"body": ["bye"]}', False),
    ("hello", '{"messageId": ["m1"]}', True),         # plain body, no body pattern: metadata only
    ("hello", '{"body": {"a": ["1"]}}', False),       # plain body, JSON pattern: dropped
    ('{"a": "1"}', '{"body": ["{\\"a\\": \\"1\\"}"]}', False),  # JSON body, plain pattern: dropped
    ('{"a": "1"}', '{"messageId": ["m1"]}', True),    # JSON body, no body pattern: metadata only
    ('{"a": "1"}', '{"body": {"a": ["1"]}}', True),   # JSON body, JSON pattern: filter normally
    ('{"a": "1"}', '{"body": {"a": ["2"]}}', False),
])
def test_sqs_body_format_table(body: str, pattern: str, expected: bool) -> None:
    """The SQS body/pattern format table of docs/aws-semantics.md, "Event filtering"."""
    flt = RecordFilter.compile([pattern], "body")
    assert flt is not None
    record = {"messageId": "m1", "body": body}
    data, is_json = decode_json_object(body)
    assert flt.matches(record, data, is_json) is expected


def test_filters_are_ored() -> None:
    """A record is kept if any filter matches."""
    flt = RecordFilter.compile(['{"body": {"a": ["1"]}}', '{"body": {"b": ["2"]}}'], "body")
    assert flt is not None
    assert flt.matches({}, {"b": "2"}, True)
    assert not flt.matches({}, {"c": "3"}, True)


def test_no_patterns_means_no_filter() -> None:
    """Without filters every record passes (no filter object at all)."""
    assert RecordFilter.compile([], "body") is None
