"""AWS's wording for refusals of an event source mapping, one place for every surface that refuses
one: the Lambda API, ``broker validate``, start-up and reloads of the config file (with the field's
path in front). The sentences are the ones AWS answers, recorded in docs/aws-errors.md."""

from __future__ import annotations

from typing import Any

from broker.types import SourceKind

BAD_FILTER = "Invalid filter pattern definition."
NO_STARTING_POSITION = ("1 validation error detected: Value null at 'startingPosition' failed to satisfy "
                        "constraint: Member must not be null.")
FUNCTION_MISSING = "Function does not exist"
UNSUPPORTED_DESTINATION = "Unsupported DestinationConfig parameter for given event source mapping type."
MISSING_QUEUE = ("Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
                 "SQS Error Message: The specified queue does not exist.")
# Lambda's own order of an enum's values in its messages
_ENUMS = {"startingPosition": "[LATEST, AT_TIMESTAMP, TRIM_HORIZON]"}


def missing_source(kind: SourceKind, arn: str) -> str:
    """CreateEventSourceMapping's answer for a queue or stream that does not exist."""
    return MISSING_QUEUE if kind is SourceKind.SQS else f"Stream not found: {arn}"


def duplicate_mapping(kind: SourceKind, arn: str, function: str, existing: str) -> str:
    if kind is SourceKind.SQS:
        return (f'An event source mapping with SQS arn (" {arn} ") and function (" {function} ") already exists. '
                f"Please update or delete the existing mapping with UUID {existing}")
    return (f'The event source arn (" {arn} ") and function (" {function} ") provided mapping already exists. '
            f"Please update or delete the existing mapping with UUID {existing}")


def validation_error(error: Any) -> tuple[str, str]:
    """(exception type, message) for one of pydantic's errors of a mapping field, as Lambda words a
    value outside the API's constraints."""
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
    elif kind == "missing" and member == "eventSourceArn":
        return "InvalidParameterValueException", "Unrecognized event source."
    elif kind == "missing":
        return "ValidationException", (f"1 validation error detected: Value null at '{member}' failed to satisfy "
                                       "constraint: Member must not be null")
    elif kind == "extra_forbidden":
        return "InvalidParameterValueException", f"Unsupported parameter: {field}"
    else:
        constraint = f"Member must be valid: {error['msg']}"
    return "ValidationException", (f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
                                   f"constraint: {constraint}")


def _listed(expected: str) -> str:
    return "[" + expected.replace("'", "").replace(" or ", ", ") + "]"
