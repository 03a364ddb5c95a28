"""CreateEventSourceMapping and UpdateEventSourceMapping bodies checked exactly like the config
file (the same model and rules), answered in Lambda's exception types and wording (spec §9.5):
``ValidationException`` for a value outside the API's constraints, ``InvalidParameterValueException``
for a rule of Lambda's, with the message AWS gives."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from broker.config import rules
from broker.config.models import Config, EventSourceMapping, FunctionConfig

# UpdateEventSourceMapping's members: what Lambda lets change on an existing mapping.
UPDATABLE = frozenset({
    "FunctionName", "Enabled", "BatchSize", "MaximumBatchingWindowInSeconds", "FilterCriteria", "ScalingConfig",
    "DestinationConfig", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError", "MaximumRetryAttempts",
    "ParallelizationFactor", "TumblingWindowInSeconds", "FunctionResponseTypes", "MetricsConfig", "KMSKeyArn",
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
        raise Refused(400, "InvalidParameterValueException", "Function does not exist")
    issues = rules.check(Config(functions=functions, event_source_mappings=[esm]))
    mapping_issues = [i for i in issues if i.path.startswith("event_source_mappings")]
    if mapping_issues:  # the rules speak AWS's wording already (the config file shows the same)
        message = mapping_issues[0].message
        if message.startswith(_BAD_FILTER):  # the file's message adds what is wrong; AWS's stops here
            message = _BAD_FILTER
        raise Refused(400, "InvalidParameterValueException", message)
    return esm


_BAD_FILTER = "Invalid filter pattern definition."
# Lambda's own order of an enum's values in its messages
_ENUMS = {"startingPosition": "[LATEST, AT_TIMESTAMP, TRIM_HORIZON]"}


def _listed(expected: str) -> str:
    return "[" + expected.replace("'", "").replace(" or ", ", ") + "]"


def _validation(exc: ValidationError) -> Refused:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
    member = field[:1].lower() + field[1:]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "literal_error":
        constraint = f"Member must satisfy enum value set: {_ENUMS.get(member, _listed(ctx.get('expected', '')))}"
    elif kind in ("greater_than_equal", "greater_than"):
        constraint = f"Member must have value greater than or equal to {ctx.get('ge', ctx.get('gt'))}"
    elif kind in ("less_than_equal", "less_than"):
        constraint = f"Member must have value less than or equal to {ctx.get('le', ctx.get('lt'))}"
    elif kind == "missing":
        return Refused(400, "ValidationException", f"1 validation error detected: Value null at '{member}' failed "
                       "to satisfy constraint: Member must not be null")
    elif kind == "extra_forbidden":
        return Refused(400, "InvalidParameterValueException", f"Unsupported parameter: {field}")
    else:
        constraint = f"Member must be valid: {error['msg']}"
    return Refused(400, "ValidationException",
                   f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
                   f"{constraint}")
