"""Lambda's event source mapping routes (spec §9.1, §9.3): list, get, and PUT ``Enabled``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from broker.api.bodies import parse_json
from broker.api.errors import aws_error
from broker.arns import resolve_name
from broker.sources.mapping import MappingRunner
from broker.types import SourceKind

_PREFIX = "/2015-03-31/event-source-mappings"
_ECHOED = (
    "BatchSize", "MaximumBatchingWindowInSeconds", "StartingPosition", "StartingPositionTimestamp",
    "ParallelizationFactor", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
    "MaximumRetryAttempts", "TumblingWindowInSeconds", "KMSKeyArn",
)


def describe(runner: MappingRunner, *, region: str, account: str, kind: SourceKind) -> dict[str, Any]:
    """``EventSourceMappingConfiguration`` as Lambda returns it."""
    esm = runner.esm
    out: dict[str, Any] = {
        "UUID": runner.uuid,
        "EventSourceMappingArn": f"arn:aws:lambda:{region}:{account}:event-source-mapping:{runner.uuid}",
        "FunctionArn": runner.function_arn,
        "EventSourceArn": esm.EventSourceArn,
        "State": runner.state,
        "StateTransitionReason": runner.state_transition_reason,
        "LastModified": round(runner.last_modified, 3),
        "FunctionResponseTypes": list(esm.FunctionResponseTypes),
    }
    for name in _ECHOED:
        value = getattr(esm, name)
        if value is not None:
            out[name] = value
    for name in ("FilterCriteria", "ScalingConfig", "DestinationConfig", "MetricsConfig"):
        value = getattr(esm, name)
        if value is not None:
            out[name] = value.model_dump(exclude_none=True)
    if kind is not SourceKind.SQS:
        out.setdefault("DestinationConfig", {"OnFailure": {}})  # Lambda shows it empty on stream mappings
        out["StateTransitionReason"] = "User action"
        out["LastProcessingResult"] = getattr(runner.source, "last_processing_result",
                                              "No records processed")
    return out


def routes(runners: Mapping[str, MappingRunner], kinds: Mapping[str, SourceKind], *,
           region: str, account: str, functions: Callable[[], Mapping[str, Any]] | None = None) -> list[web.RouteDef]:
    def show(r: MappingRunner) -> dict[str, Any]:
        return describe(r, region=region, account=account, kind=kinds[r.uuid])

    def not_found(uuid: str) -> web.Response:
        return aws_error(404, "ResourceNotFoundException",
                         f"The resource you requested does not exist. (Service: Lambda, "
                         f"Status Code: 404, Request ID: -) UUID: {uuid}")

    async def list_mappings(request: web.Request) -> web.Response:
        arn = request.query.get("EventSourceArn")
        fn = request.query.get("FunctionName")
        name = None
        if fn:
            name, qualifier = resolve_name(fn, account)
            if qualifier not in (None, "$LATEST") or (functions is not None and name not in functions()):
                full = f"arn:aws:lambda:{region}:{account}:function:{name}" + (f":{qualifier}" if qualifier else "")
                return aws_error(404, "ResourceNotFoundException", f"Function not found: {full}")
        matching = sorted((r for r in runners.values() if (not arn or r.esm.EventSourceArn == arn)
                           and (not name or r.esm.FunctionName == name)), key=lambda r: r.uuid)
        return _page(request, matching, show)

    async def get_mapping(request: web.Request) -> web.Response:
        runner = runners.get(request.match_info["uuid"])
        return web.json_response(show(runner)) if runner else not_found(request.match_info["uuid"])

    async def update_mapping(request: web.Request) -> web.Response:
        runner = runners.get(request.match_info["uuid"])
        if runner is None:
            return not_found(request.match_info["uuid"])
        enabled, refusal = _enabled_change(await request.read())
        if refusal is not None:
            return refusal
        if enabled is not None:
            runner.set_enabled(enabled)
        return web.json_response(show(runner), status=202)

    return [
        web.get(_PREFIX, list_mappings),
        web.get(_PREFIX + "/", list_mappings),
        web.get(_PREFIX + "/{uuid}", get_mapping),
        web.put(_PREFIX + "/{uuid}", update_mapping),
    ]


def _page(request: web.Request, matching: list[MappingRunner],
          show: Callable[[MappingRunner], dict[str, Any]]) -> web.Response:
    """``MaxItems`` (1-10000, default 100) and ``Marker``/``NextMarker`` paging, ordered by UUID."""
    try:
        limit = int(request.query.get("MaxItems", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10000:
        return aws_error(400, "ValidationException", f"1 validation error detected: Value "
                         f"'{request.query.get('MaxItems')}' at 'maxItems' failed to satisfy constraint: Member "
                         "must have value less than or equal to 10000 and greater than or equal to 1")
    marker = request.query.get("Marker")
    start = next((i + 1 for i, r in enumerate(matching) if r.uuid == marker), 0)
    page = matching[start:start + limit]
    out: dict[str, Any] = {"EventSourceMappings": [show(r) for r in page]}
    if start + limit < len(matching):
        out["NextMarker"] = page[-1].uuid
    return web.json_response(out)


def _enabled_change(raw: bytes) -> tuple[bool | None, web.Response | None]:
    """The ``Enabled`` an UpdateEventSourceMapping body asks for, or Lambda's error for the body."""
    try:
        body = parse_json(raw or b"{}")
    except ValueError:
        return None, aws_error(400, "InvalidRequestContentException", "Could not parse request body into json")
    if not isinstance(body, dict):
        return None, aws_error(400, "InvalidRequestContentException", "The request body must be a JSON object")
    unsupported = sorted(set(body) - {"Enabled", "FunctionName"})
    if unsupported:
        return None, aws_error(400, "InvalidParameterValueException",
                               f"Only Enabled can be changed through the API ({', '.join(unsupported)} "
                               f"given); change the config file for everything else")
    if "Enabled" in body and not isinstance(body["Enabled"], bool):
        return None, aws_error(400, "InvalidParameterValueException", "Enabled must be true or false")
    return body.get("Enabled"), None
