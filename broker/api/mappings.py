"""Lambda's event source mapping routes (spec §9.1, §9.3): list, get, and PUT ``Enabled``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from broker.api.bodies import parse_json
from broker.api.errors import aws_error
from broker.arns import resolve_name, source_kind
from broker.config.models import EventSourceMapping
from broker.control.service import MappingService
from broker.control.validation import Refused
from broker.errors import BrokerError
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
           region: str, account: str, functions: Callable[[], Mapping[str, Any]] | None = None,
           control: MappingService | None = None) -> list[web.RouteDef]:
    return _Api(runners, kinds, region=region, account=account, functions=functions, control=control).routes()


class _Api:
    def __init__(self, runners: Mapping[str, MappingRunner], kinds: Mapping[str, SourceKind], *, region: str,
                 account: str, functions: Callable[[], Mapping[str, Any]] | None, control: MappingService | None,
                 ) -> None:
        self._runners = runners
        self._kinds = kinds
        self._region = region
        self._account = account
        self._functions = functions
        self._control = control

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(_PREFIX, self.list_mappings),
            web.get(_PREFIX + "/", self.list_mappings),
            web.get(_PREFIX + "/{uuid}", self.get_mapping),
            web.put(_PREFIX + "/{uuid}", self.update_mapping),
            web.post(_PREFIX, self.create_mapping),
            web.post(_PREFIX + "/", self.create_mapping),
            web.delete(_PREFIX + "/{uuid}", self.delete_mapping),
        ]

    def _show(self, r: MappingRunner) -> dict[str, Any]:
        return describe(r, region=self._region, account=self._account, kind=self._kinds[r.uuid])

    @staticmethod
    def _not_found(uuid: str) -> web.Response:
        return aws_error(404, "ResourceNotFoundException",
                         f"The resource you requested does not exist. (Service: Lambda, "
                         f"Status Code: 404, Request ID: -) UUID: {uuid}")

    async def list_mappings(self, request: web.Request) -> web.Response:
        arn = request.query.get("EventSourceArn")
        fn = request.query.get("FunctionName")
        name = None
        if fn:
            name, qualifier = resolve_name(fn, self._account)
            if qualifier not in (None, "$LATEST") or (self._functions is not None and name not in self._functions()):
                full = f"arn:aws:lambda:{self._region}:{self._account}:function:{name}" + (
                    f":{qualifier}" if qualifier else "")
                return aws_error(404, "ResourceNotFoundException", f"Function not found: {full}")
        matching = sorted((r for r in self._runners.values() if (not arn or r.esm.EventSourceArn == arn)
                           and (not name or r.esm.FunctionName == name)), key=lambda r: r.uuid)
        return _page(request, matching, self._show)

    async def get_mapping(self, request: web.Request) -> web.Response:
        runner = self._runners.get(request.match_info["uuid"])
        return web.json_response(self._show(runner)) if runner else self._not_found(request.match_info["uuid"])

    def _answer(self, esm: EventSourceMapping, state: str) -> web.Response:
        assert esm.UUID is not None
        runner = self._runners.get(esm.UUID)
        if runner is None:  # not (or no longer) run here: shown from the request
            function = f"arn:aws:lambda:{self._region}:{self._account}:function:{esm.FunctionName}"
            runner = MappingRunner(esm, _NoSource(), function_arn=function, metrics=None, clock=None)
        shown = describe(runner, region=self._region, account=self._account, kind=source_kind(esm.EventSourceArn))
        return web.json_response({**shown, "State": state}, status=202)

    async def _guarded(self, work: Awaitable[EventSourceMapping], state: str) -> web.Response:
        try:
            return self._answer(await work, state)
        except Refused as exc:
            return aws_error(exc.status, exc.code, exc.message)

    async def create_mapping(self, request: web.Request) -> web.Response:
        body = await _object(request)
        if isinstance(body, web.Response):
            return body
        if self._control is None:
            return aws_error(400, "InvalidParameterValueException", "mappings come from the config file here")
        return await self._guarded(self._control.create(body), "Creating")

    async def delete_mapping(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        if self._control is None or (uuid not in self._runners and not await self._control.exists(uuid)):
            return self._not_found(uuid)
        return await self._guarded(self._control.delete(uuid), "Deleting")

    async def update_mapping(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        runner = self._runners.get(uuid)
        if self._control is not None and (runner is None or runner.from_api):
            body = await _object(request)
            if isinstance(body, web.Response):
                return body
            if runner is None and not await self._control.exists(uuid):
                return self._not_found(uuid)
            return await self._guarded(self._control.update(uuid, body), "Updating")
        if runner is None:
            return self._not_found(uuid)
        return await self._pause_or_resume(runner, await request.read())

    async def _pause_or_resume(self, runner: MappingRunner, raw: bytes) -> web.Response:
        """A file mapping: only ``Enabled`` changes through the API."""
        enabled, refusal = _enabled_change(raw)
        if refusal is not None:
            return refusal
        if enabled is not None:
            runner.set_enabled(enabled)
            if self._control is not None:  # every replica applies it, and it outlives restarts
                try:
                    await self._control.remember_enabled(runner.uuid, enabled, runner.file_enabled)
                except BrokerError as exc:
                    return aws_error(503, "ServiceException", f"the pause could not be kept: {exc}",
                                     error_type="Service")
        return web.json_response(self._show(runner), status=202)


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


class _NoSource:
    """Stands in for the source of a mapping this replica does not run (yet): describe() only."""

    async def run(self) -> None:
        return None

    def stop(self) -> None:
        return None

    async def probe(self) -> None:
        return None


async def _object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = parse_json(await request.read() or b"{}")
    except ValueError as exc:
        return aws_error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
    if not isinstance(body, dict):
        return aws_error(400, "InvalidRequestContentException", "The request body must be a JSON object")
    return body
