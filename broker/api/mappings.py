"""Lambda's event source mapping routes: list, get, create, update, delete (docs/aws-semantics.md,
"The event source mapping API")."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from broker.api.bodies import parse_json
from broker.api.errors import aws_error, json_object, mapping_not_found, store_guarded
from broker.api.routes import needs
from broker.arns import function_arn, mapping_arn, resolve_name, source_kind
from broker.config.models import EventSourceMapping
from broker.control.local import LocalMappings, MappingStatus
from broker.control.service import Known, MappingService
from broker.control.validation import Refused
from broker.types import SourceKind

_PREFIX = "/2015-03-31/event-source-mappings"
_ECHOED = (
    "BatchSize", "MaximumBatchingWindowInSeconds", "StartingPosition", "StartingPositionTimestamp",
    "ParallelizationFactor", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
    "MaximumRetryAttempts", "TumblingWindowInSeconds", "KMSKeyArn", "IsolateFailingKeys",
)


def describe(status: MappingStatus, *, region: str, account: str) -> dict[str, Any]:
    """``EventSourceMappingConfiguration`` of a mapping this replica runs."""
    return describe_definition(
        status.esm, region=region, account=account, kind=status.kind, function_arn=status.function_arn,
        state=status.state, reason=status.reason, last_modified=status.last_modified,
        last_processing_result=status.last_processing_result)


def describe_definition(esm: EventSourceMapping, *, region: str, account: str, kind: SourceKind, function_arn: str,
                        state: str, last_modified: float, reason: str = "USER_INITIATED",
                        last_processing_result: str = "No records processed") -> dict[str, Any]:
    """``EventSourceMappingConfiguration`` as Lambda returns it, from a mapping's definition."""
    assert esm.UUID is not None
    out: dict[str, Any] = {
        "UUID": esm.UUID,
        "EventSourceMappingArn": mapping_arn(region, account, esm.UUID),
        "FunctionArn": function_arn,
        "EventSourceArn": esm.EventSourceArn,
        "State": state,
        "StateTransitionReason": reason,
        "LastModified": round(last_modified, 3),
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
        out["LastProcessingResult"] = last_processing_result
    return out


def routes(local: LocalMappings, *, region: str, account: str, functions: Callable[[], Mapping[str, Any]],
           control: MappingService, runs: Callable[[str, str], bool]) -> list[web.RouteDef]:
    """``local``: the mappings this replica runs; ``runs(uuid, document)``: this replica runs that
    API mapping as stored."""
    return _Api(local, region=region, account=account, functions=functions, control=control, runs=runs).routes()


class _Api:
    """Answers come from what the deployment knows (the file and the registry in Redis), shown with
    this replica's status of it where it runs the mapping as defined: a replica that has not started
    a mapping yet, or is swapping it on a reload, still knows it."""

    def __init__(self, local: LocalMappings, *, region: str, account: str,
                 functions: Callable[[], Mapping[str, Any]], control: MappingService,
                 runs: Callable[[str, str], bool]) -> None:
        self._local = local
        self._region = region
        self._account = account
        self._functions = functions
        self._control = control
        self._runs = runs

    def routes(self) -> list[web.RouteDef]:
        g = functools.partial(store_guarded, store="mapping registry")
        return [
            web.get(_PREFIX, needs("lambda:ListEventSourceMappings", g(self.list_mappings))),
            web.get(_PREFIX + "/", needs("lambda:ListEventSourceMappings", g(self.list_mappings))),
            web.get(_PREFIX + "/{uuid}", needs("lambda:GetEventSourceMapping", g(self.get_mapping))),
            web.put(_PREFIX + "/{uuid}", needs("lambda:UpdateEventSourceMapping", g(self.update_mapping))),
            web.post(_PREFIX, needs("lambda:CreateEventSourceMapping", g(self.create_mapping))),
            web.post(_PREFIX + "/", needs("lambda:CreateEventSourceMapping", g(self.create_mapping))),
            web.delete(_PREFIX + "/{uuid}", needs("lambda:DeleteEventSourceMapping", g(self.delete_mapping))),
        ]

    def _show(self, status: MappingStatus) -> dict[str, Any]:
        return describe(status, region=self._region, account=self._account)

    def _current(self, uuid: str, known: Known) -> MappingStatus | None:
        """This replica's status of the mapping, if it runs it as the deployment defines it now."""
        status = self._local.status(uuid)
        if status is None or status.from_api != known.from_api:
            return None
        if known.from_api:
            return status if self._runs(uuid, known.document) else None
        same = status.esm.model_dump(exclude={"Enabled"}) == known.esm.model_dump(exclude={"Enabled"})
        return status if same else None

    def _view(self, uuid: str, known: Known) -> dict[str, Any]:
        status = self._current(uuid, known)
        if status is not None:
            return self._show(status)
        stale = self._local.status(uuid) is not None  # run here with an earlier definition: being replaced
        state = "Updating" if stale else ("Enabled" if known.esm.Enabled else "Disabled")
        return self._stand_in(known.esm, state, known.last_modified)

    def _stand_in(self, esm: EventSourceMapping, state: str, last_modified: float | None = None) -> dict[str, Any]:
        """A mapping this replica does not run (yet, or any more), shown from its definition."""
        return describe_definition(
            esm, region=self._region, account=self._account, kind=source_kind(esm.EventSourceArn),
            function_arn=function_arn(self._region, self._account, esm.FunctionName), state=state,
            last_modified=time.time() if last_modified is None else last_modified)

    async def list_mappings(self, request: web.Request) -> web.Response:
        arn = request.query.get("EventSourceArn")
        fn = request.query.get("FunctionName")
        name = None
        if fn:
            name, qualifier = resolve_name(fn, self._account)
            if qualifier not in (None, "$LATEST") or name not in self._functions():
                full = function_arn(self._region, self._account, name, qualifier)
                return aws_error(404, "ResourceNotFoundException", f"Function not found: {full}")
        known = await self._control.catalog()
        matching = sorted((u, k) for u, k in known.items() if (not arn or k.esm.EventSourceArn == arn)
                          and (not name or k.esm.FunctionName == name))
        return _page(request, matching, self._view)

    async def get_mapping(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        known = (await self._control.catalog()).get(uuid)
        return web.json_response(self._view(uuid, known)) if known else mapping_not_found(uuid)

    def _answer(self, esm: EventSourceMapping, state: str) -> web.Response:
        assert esm.UUID is not None
        status = self._local.status(esm.UUID)
        shown = self._show(status) if status is not None else self._stand_in(esm, state)  # not (yet) run here
        return web.json_response({**shown, "State": state}, status=202)

    async def _guarded(self, work: Awaitable[EventSourceMapping], state: str) -> web.Response:
        try:
            return self._answer(await work, state)
        except Refused as exc:
            return aws_error(exc.status, exc.code, exc.message)

    async def create_mapping(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        return await self._guarded(self._control.create(body), "Creating")

    async def delete_mapping(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        if uuid not in await self._control.catalog():
            return mapping_not_found(uuid)
        return await self._guarded(self._control.delete(uuid), "Deleting")

    async def update_mapping(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        known = (await self._control.catalog()).get(uuid)
        if known is None:
            return mapping_not_found(uuid)
        if not known.from_api:
            return await self._pause_or_resume(uuid, known, await request.read())
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        return await self._guarded(self._control.update(uuid, body), _transition(known.esm.Enabled, body))

    async def _pause_or_resume(self, uuid: str, known: Known, raw: bytes) -> web.Response:
        """A file mapping: only ``Enabled`` changes through the API; every replica applies it, and
        it outlives restarts. The answer shows the transition, as Lambda's does."""
        enabled, refusal = _enabled_change(raw)
        if refusal is not None:
            return refusal
        status = self._local.status(uuid)
        now = status.esm.Enabled if status is not None else known.esm.Enabled
        state = _transition(now, {} if enabled is None else {"Enabled": enabled})
        if enabled is not None:
            self._local.set_enabled(uuid, enabled)
            file_enabled = status.file_enabled if status is not None else known.esm.Enabled
            await self._control.remember_enabled(uuid, enabled, file_enabled)
            status = self._local.status(uuid)  # as it is after the change
        shown = self._show(status) if status is not None else self._stand_in(known.esm, state, known.last_modified)
        return web.json_response({**shown, "State": state}, status=202)


def _transition(enabled_now: bool, body: dict[str, Any]) -> str:
    """The State an UpdateEventSourceMapping answer shows: Enabling or Disabling when it changes
    ``Enabled``, else Updating."""
    wanted = body.get("Enabled")
    if isinstance(wanted, bool) and wanted != enabled_now:
        return "Enabling" if wanted else "Disabling"
    return "Updating"


def _page(request: web.Request, matching: list[tuple[str, Known]],
          show: Callable[[str, Known], dict[str, Any]]) -> web.Response:
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
    start = next((i + 1 for i, (u, _) in enumerate(matching) if u == marker), 0)
    page = matching[start:start + limit]
    out: dict[str, Any] = {"EventSourceMappings": [show(u, k) for u, k in page]}
    if start + limit < len(matching):
        out["NextMarker"] = page[-1][0]
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

