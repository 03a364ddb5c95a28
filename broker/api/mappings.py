"""Lambda's event source mapping routes (spec §9.1, §9.3): list, get, and PUT ``Enabled``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from broker.api.bodies import parse_json
from broker.api.errors import aws_error
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
        "LastModified": runner.last_modified,
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
        out["LastProcessingResult"] = getattr(runner.source, "last_processing_result",
                                              "No records processed")
    return out


def routes(runners: Mapping[str, MappingRunner], kinds: Mapping[str, SourceKind], *,
           region: str, account: str) -> list[web.RouteDef]:
    def show(r: MappingRunner) -> dict[str, Any]:
        return describe(r, region=region, account=account, kind=kinds[r.uuid])

    def not_found(uuid: str) -> web.Response:
        return aws_error(404, "ResourceNotFoundException",
                         f"The resource you requested does not exist. (Service: Lambda, "
                         f"Status Code: 404, Request ID: -) UUID: {uuid}")

    async def list_mappings(request: web.Request) -> web.Response:
        arn = request.query.get("EventSourceArn")
        fn = request.query.get("FunctionName")
        items = [show(r) for r in runners.values()
                 if (not arn or r.esm.EventSourceArn == arn)
                 and (not fn or fn in (r.esm.FunctionName, r.function_arn))]
        return web.json_response({"EventSourceMappings": items})

    async def get_mapping(request: web.Request) -> web.Response:
        runner = runners.get(request.match_info["uuid"])
        return web.json_response(show(runner)) if runner else not_found(request.match_info["uuid"])

    async def update_mapping(request: web.Request) -> web.Response:
        runner = runners.get(request.match_info["uuid"])
        if runner is None:
            return not_found(request.match_info["uuid"])
        try:
            body = parse_json(await request.read() or b"{}")
        except ValueError:
            return aws_error(400, "InvalidRequestContentException", "Could not parse request body into json")
        if not isinstance(body, dict):
            return aws_error(400, "InvalidRequestContentException", "The request body must be a JSON object")
        unsupported = sorted(set(body) - {"Enabled", "FunctionName"})
        if unsupported:
            return aws_error(400, "InvalidParameterValueException",
                             f"Only Enabled can be changed through the API ({', '.join(unsupported)} "
                             f"given); change the config file for everything else")
        if "Enabled" in body:
            if not isinstance(body["Enabled"], bool):
                return aws_error(400, "InvalidParameterValueException", "Enabled must be true or false")
            runner.set_enabled(body["Enabled"])
        return web.json_response(show(runner), status=202)

    return [
        web.get(_PREFIX, list_mappings),
        web.get(_PREFIX + "/", list_mappings),
        web.get(_PREFIX + "/{uuid}", get_mapping),
        web.put(_PREFIX + "/{uuid}", update_mapping),
    ]
