"""ReportBatchItemFailures parsing: every valid, malformed and empty variant of docs/aws-semantics.md, "Partial batch responses"."""

from __future__ import annotations

import pytest

from broker.batching.partial_failures import parse_item_failures

IDS = {"m1", "m2", "m3"}


@pytest.mark.parametrize("payload", [
    b"", b"null", b'""', b"[]", b"{}", b'{"batchItemFailures": []}', b'{"batchItemFailures": null}',
    b'"done"', b"42",
])
def test_full_success_variants(payload: bytes) -> None:
    """Empty/null responses and empty lists mean the whole batch succeeded."""
    assert parse_item_failures(payload, IDS) == frozenset()


@pytest.mark.parametrize("payload", [
    b"not json",
    b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
    b'{"batchItemFailures": [{"itemIdentifier": null}]}',
    b'{"batchItemFailures": [{"foo": "notvalid"}]}',
    b'{"batchItemFailures": [{"itemIdentifier": "unknown"}]}',
    b'{"batchItemFailures": [{"itemIdentifier": 7}]}',
    b'{"batchItemFailures": ["m1"]}',
    b'{"batchItemFailures": "m1"}',
    b'{"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": ""}]}',
])
def test_malformed_variants_fail_the_whole_batch(payload: bytes) -> None:
    """Malformed responses make the whole batch fail (None)."""
    assert parse_item_failures(payload, IDS) is None


def test_reported_items() -> None:
    """Valid identifiers are returned as the failed set."""
    payload = b'{"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}'
    assert parse_item_failures(payload, IDS) == frozenset({"m1", "m3"})
