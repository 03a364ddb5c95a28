"""The broker's own quarantine routes, beside Lambda's on the same port and authenticated the same
way (IAM-style ``broker:`` actions, which ``lambda:*`` does not grant):

    GET  /broker/v1/mappings/{UUID}/quarantine?MaxItems=&Marker=     broker:ListQuarantine
    POST /broker/v1/mappings/{UUID}/quarantine/discard               broker:DiscardQuarantine
    GET  /broker/v1/functions/{FunctionName}/quarantine?...          broker:ListQuarantine
    POST /broker/v1/functions/{FunctionName}/quarantine/discard      broker:DiscardQuarantine
    POST /broker/v1/mappings/{UUID}/quarantine/replay                broker:ReplayQuarantine
    POST /broker/v1/functions/{FunctionName}/quarantine/replay       broker:ReplayQuarantine

A list answers ``{"Records": [...], "NextMarker": ...}``, oldest first; a discard or a replay takes
``{"Ids": [...]}`` or ``{"All": true}`` and answers ``{"Discarded": N}`` or 202 ``{"Replaying": N}``
(``quarantine.replay``). Errors are Lambda's shape.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from broker.api.errors import aws_error, json_object, mapping_not_found, store_guarded
from broker.api.routes import needs
from broker.arns import function_arn, resolve_name, source_kind
from broker.control.service import Known
from broker.quarantine.replay import Replayer
from broker.quarantine.store import Quarantine, Quarantines
from broker.types import SourceKind

_PREFIX = "/broker/v1"
_MAX_ITEMS = 1000


def routes(quarantines: Quarantines, replayer: Replayer, *, catalog: Callable[[], Awaitable[Mapping[str, Known]]],
           functions: Callable[[], Mapping[str, Any]], region: str, account: str) -> list[web.RouteDef]:
    api = _Api(quarantines, replayer, catalog=catalog, functions=functions, region=region, account=account)
    g = functools.partial(store_guarded, store="quarantine")
    mapping, function = _PREFIX + "/mappings/{uuid}/quarantine", _PREFIX + "/functions/{name}/quarantine"
    return [
        web.get(mapping, needs("broker:ListQuarantine", g(api.list_mapping))),
        web.post(mapping + "/discard", needs("broker:DiscardQuarantine", g(api.discard_mapping))),
        web.post(mapping + "/replay", needs("broker:ReplayQuarantine", g(api.replay_mapping))),
        web.get(function, needs("broker:ListQuarantine", g(api.list_function))),
        web.post(function + "/discard", needs("broker:DiscardQuarantine", g(api.discard_function))),
        web.post(function + "/replay", needs("broker:ReplayQuarantine", g(api.replay_function))),
    ]


class _Api:
    def __init__(self, quarantines: Quarantines, replayer: Replayer, *,
                 catalog: Callable[[], Awaitable[Mapping[str, Known]]], functions: Callable[[], Mapping[str, Any]],
                 region: str, account: str) -> None:
        self._quarantines = quarantines
        self._replayer = replayer
        self._catalog = catalog
        self._functions = functions
        self._region = region
        self._account = account

    async def _of_mapping(self, request: web.Request) -> tuple[Quarantine, str] | web.Response:
        """The mapping's quarantine and its function's name, or Lambda's error."""
        uuid = request.match_info["uuid"]
        known = (await self._catalog()).get(uuid)
        if known is None:
            return mapping_not_found(uuid)
        if source_kind(known.esm.EventSourceArn) is SourceKind.SQS:
            return aws_error(400, "InvalidParameterValueException",
                             f"Mapping {uuid} reads an SQS queue: failed messages stay in the queue and go to its "
                             "dead-letter queue (redrive policy); only stream mappings have a quarantine")
        return self._quarantines.of_mapping(uuid, known.esm.FunctionName), known.esm.FunctionName

    def _of_function(self, request: web.Request) -> tuple[Quarantine, str] | web.Response:
        name, qualifier = resolve_name(request.match_info["name"], self._account)
        if qualifier not in (None, "$LATEST") or name not in self._functions():
            return aws_error(404, "ResourceNotFoundException",
                             f"Function not found: {function_arn(self._region, self._account, name, qualifier)}")
        return self._quarantines.of_function(name), name

    async def list_mapping(self, request: web.Request) -> web.Response:
        found = await self._of_mapping(request)
        return found if isinstance(found, web.Response) else await _list(request, found[0])

    async def list_function(self, request: web.Request) -> web.Response:
        found = self._of_function(request)
        return found if isinstance(found, web.Response) else await _list(request, found[0])

    async def discard_mapping(self, request: web.Request) -> web.Response:
        found = await self._of_mapping(request)
        return found if isinstance(found, web.Response) else await _discard(request, found[0])

    async def discard_function(self, request: web.Request) -> web.Response:
        found = self._of_function(request)
        return found if isinstance(found, web.Response) else await _discard(request, found[0])

    async def replay_mapping(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        return await _replay(request, await self._of_mapping(request),
                             lambda q, function, ids: self._replayer.records(uuid, function, q, ids))

    async def replay_function(self, request: web.Request) -> web.Response:
        return await _replay(request, self._of_function(request),
                             lambda q, name, ids: self._replayer.events(name, q, ids))


async def _replay(request: web.Request, found: tuple[Quarantine, str] | web.Response,
                  replay: Callable[[Quarantine, str, list[str] | None], Awaitable[int]]) -> web.Response:
    if isinstance(found, web.Response):
        return found
    quarantine, function = found
    ids = await _ids(request, quarantine)
    if isinstance(ids, web.Response):
        return ids
    return web.json_response({"Replaying": await replay(quarantine, function, ids)}, status=202)


async def _list(request: web.Request, quarantine: Quarantine) -> web.Response:
    raw = request.query.get("MaxItems", "100")
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= _MAX_ITEMS:
        return aws_error(400, "ValidationException", f"1 validation error detected: Value '{raw}' at 'maxItems' "
                         f"failed to satisfy constraint: Member must have value less than or equal to {_MAX_ITEMS} "
                         "and greater than or equal to 1")
    records, marker = await quarantine.page(limit, request.query.get("Marker"))
    out: dict[str, Any] = {"Records": records}
    if marker is not None:
        out["NextMarker"] = marker
    return web.json_response(out)


async def _ids(request: web.Request, quarantine: Quarantine) -> list[str] | web.Response | None:
    """The entries a discard or replay names: ``Ids`` (each must be there), or None for ``All``."""
    body = await json_object(request)
    if isinstance(body, web.Response):
        return body
    ids = body.get("Ids")
    everything = body.get("All") is True
    if everything == (ids is not None) or (ids is not None and (
            not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids))):
        return aws_error(400, "InvalidParameterValueException",
                         'Give either "Ids" (a non-empty list of quarantine entry ids) or "All": true')
    if ids is None:
        return None
    missing = await quarantine.missing(ids)
    if missing:
        return aws_error(404, "ResourceNotFoundException", f"Quarantine entries not found: {', '.join(missing[:10])}")
    return list(ids)


async def _discard(request: web.Request, quarantine: Quarantine) -> web.Response:
    ids = await _ids(request, quarantine)
    if isinstance(ids, web.Response):
        return ids
    return web.json_response({"Discarded": await quarantine.discard(ids)})
