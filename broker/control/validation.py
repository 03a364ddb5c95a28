"""CreateEventSourceMapping and UpdateEventSourceMapping bodies checked exactly like the config
file (the same model and rules), answered in Lambda's exception types and wording
(docs/aws-semantics.md, "Recorded refusals"):
``ValidationException`` for a value outside the API's constraints, ``InvalidParameterValueException``
for a rule of Lambda's, with the message AWS gives."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from broker.config import rules, wording
from broker.config.models import Config, EventSourceMapping, FunctionConfig

# UpdateEventSourceMapping's members: what Lambda lets change on an existing mapping.
UPDATABLE = frozenset({
    "FunctionName", "Enabled", "BatchSize", "MaximumBatchingWindowInSeconds", "FilterCriteria", "ScalingConfig",
    "DestinationConfig", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError", "MaximumRetryAttempts",
    "ParallelizationFactor", "TumblingWindowInSeconds", "FunctionResponseTypes", "MetricsConfig", "KMSKeyArn",
    "IsolateFailingKeys",  # the broker's own
})
CREATABLE = UPDATABLE | {"EventSourceArn", "StartingPosition", "StartingPositionTimestamp", "Tags"}


class Refused(Exception):
    """The body is refused; ``status``, ``code`` and ``message`` are Lambda's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(message)


def check(fields: dict[str, Any], *, functions: dict[str, FunctionConfig], allowed: frozenset[str]
          ) -> EventSourceMapping:
    """The mapping these fields describe, validated; Refused with Lambda's error otherwise."""
    unknown = sorted(set(fields) - allowed - {"UUID"})
    if unknown:
        raise Refused(400, "InvalidParameterValueException", f"Unsupported parameter(s): {', '.join(unknown)}")
    if not fields.get("EventSourceArn"):
        raise Refused(400, "InvalidParameterValueException", "Unrecognized event source.")
    try:
        esm = EventSourceMapping.model_validate(fields)
    except ValidationError as exc:
        raise _validation(exc) from exc
    if esm.FunctionName not in functions:
        raise Refused(400, "InvalidParameterValueException", wording.FUNCTION_MISSING)
    issues = rules.check(Config(functions=functions, event_source_mappings=[esm]))
    mapping_issues = [i for i in issues if i.path.startswith("event_source_mappings")]
    if mapping_issues:  # the rules speak AWS's wording already (the config file shows the same)
        message = mapping_issues[0].message
        if message.startswith(wording.BAD_FILTER):  # the file's message adds what is wrong; AWS's stops here
            message = wording.BAD_FILTER
        raise Refused(400, "InvalidParameterValueException", message)
    return esm


def _validation(exc: ValidationError) -> Refused:
    code, message = wording.validation_error(exc.errors()[0])
    return Refused(400, code, message)
