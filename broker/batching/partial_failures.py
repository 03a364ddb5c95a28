"""``ReportBatchItemFailures`` responses (docs/aws-semantics.md, "Partial batch responses").

``parse_item_failures`` returns the set of reported identifiers: empty means the whole batch
succeeded; ``None`` means the response is malformed and the whole batch failed.

Full success: null response, empty payload, ``""``, ``[]``, ``{}``, a JSON value that is not an
object, ``batchItemFailures`` null or empty.
Full failure: a payload that is not JSON; ``batchItemFailures`` that is not a list; an entry that
is not an object, lacks ``itemIdentifier`` (wrong key name), has it null or empty, or names an
identifier that is not in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any


def parse_item_failures(payload: bytes, valid_ids: Collection[str]) -> frozenset[str] | None:  # noqa: PLR0911 - one return per rule
    if not payload.strip():
        return frozenset()
    try:
        response: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(response, dict):
        return frozenset()
    failures = response.get("batchItemFailures")
    if failures is None:
        return frozenset()
    if not isinstance(failures, list):
        return None
    ids: set[str] = set()
    for entry in failures:
        if not isinstance(entry, dict):
            return None
        identifier = entry.get("itemIdentifier")
        if not isinstance(identifier, str) or not identifier or identifier not in valid_ids:
            return None
        ids.add(identifier)
    return frozenset(ids)
