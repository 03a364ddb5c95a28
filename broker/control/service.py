"""Lambda's CreateEventSourceMapping, UpdateEventSourceMapping and DeleteEventSourceMapping.

File mappings and API mappings live together like this: a mapping declared in the config file
belongs to the file (the API may pause and resume it, and a reload keeps that until the file
changes ``Enabled`` itself; changing or deleting it through the API is refused, naming the file).
A mapping created through the API belongs to the API: it is kept in Redis (``control.registry``),
run by every replica, changed and deleted only through the API, and survives restarts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.arns import resolve_name, source_kind
from broker.config import rules, wording
from broker.config.models import EventSourceMapping, FunctionConfig
from broker.control.registry import MappingRegistry, StoredMapping
from broker.control.validation import CREATABLE, UPDATABLE, Refused, check
from broker.errors import AwsError

_NOT_FOUND = "The resource you requested does not exist."


@dataclass(frozen=True)
class Known:
    """A mapping as the deployment knows it: its definition, when it last changed (None: the file's)."""

    esm: EventSourceMapping
    last_modified: float | None
    from_api: bool
    document: str = ""  # an API mapping as stored (what a replica that runs it has applied)


class MappingService:
    def __init__(self, *, registry: MappingRegistry, functions: Callable[[], Mapping[str, FunctionConfig]],
                 file_mappings: Callable[[], Mapping[str, EventSourceMapping]],
                 probe: Callable[[EventSourceMapping], Awaitable[None]], apply: Callable[[], Awaitable[None]],
                 account: str) -> None:
        self._registry = registry
        self._functions = functions
        self._file = file_mappings
        self._probe = probe  # AwsError if the queue or stream does not exist
        self._apply = apply  # this replica follows the registry now (the others within a second)
        self._account = account

    async def remember_enabled(self, mapping_uuid: str, enabled: bool, file_enabled: bool) -> None:
        """A file mapping paused or resumed through the API: kept until the file changes ``Enabled``."""
        if enabled == file_enabled:
            await self._registry.drop_enabled_override(mapping_uuid)
        else:
            await self._registry.set_enabled_override(mapping_uuid, enabled, file_enabled)

    async def exists(self, mapping_uuid: str) -> bool:
        return mapping_uuid in await self._registry.all()

    async def catalog(self) -> dict[str, Known]:
        """Every mapping of the deployment, whatever this replica runs right now: the file's and the
        registry's (the file wins on a UUID both hold). StateStoreError while Redis cannot be read:
        a replica never says that a mapping it cannot see does not exist."""
        out = {uuid_: Known(EventSourceMapping.model_validate(item.mapping), item.last_modified, from_api=True,
                            document=item.document)
               for uuid_, item in (await self._registry.all()).items()}
        out.update({uuid_: Known(esm, None, from_api=False) for uuid_, esm in self._file().items()})
        return out

    async def create(self, fields: dict[str, Any]) -> EventSourceMapping:
        fields = self._normalized(fields)
        fields["UUID"] = str(uuid.uuid4())
        esm = check(fields, functions=dict(self._functions()), allowed=CREATABLE)
        await self._refuse_duplicate(esm)
        rules.apply_defaults(esm)
        await self._source_exists(esm)
        await self._registry.put(StoredMapping(esm.UUID or "", _fields(esm), time.time()))
        await self._apply()
        return esm

    async def update(self, mapping_uuid: str, fields: dict[str, Any]) -> EventSourceMapping:
        stored = (await self._registry.all()).get(mapping_uuid)
        if stored is None:
            raise Refused(404, "ResourceNotFoundException", _NOT_FOUND)
        fields = self._normalized(fields)
        unknown = sorted(set(fields) - UPDATABLE)
        if unknown:
            raise Refused(400, "InvalidParameterValueException",
                          f"These parameters cannot be updated: {', '.join(unknown)}")
        merged = {**stored.mapping, **fields, "UUID": mapping_uuid}
        esm = check(merged, functions=dict(self._functions()), allowed=CREATABLE)
        if esm.FunctionName != stored.mapping.get("FunctionName"):
            await self._refuse_duplicate(esm)
        rules.apply_defaults(esm)
        await self._registry.put(StoredMapping(mapping_uuid, _fields(esm), time.time()))
        await self._apply()
        return esm

    async def delete(self, mapping_uuid: str) -> EventSourceMapping:
        if mapping_uuid in self._file():
            raise Refused(400, "InvalidParameterValueException",
                          f"The event source mapping {mapping_uuid} is declared in the config file; remove it "
                          "there (the API may pause and resume it)")
        stored = (await self._registry.all()).get(mapping_uuid)
        if stored is None:
            raise Refused(404, "ResourceNotFoundException", _NOT_FOUND)
        await self._registry.delete(mapping_uuid)
        await self._apply()
        return EventSourceMapping.model_validate(stored.mapping)

    async def _source_exists(self, esm: EventSourceMapping) -> None:
        """CreateEventSourceMapping's check that the queue or stream exists, in AWS's wording."""
        try:
            await self._probe(esm)
        except AwsError as exc:
            if exc.retryable:
                raise Refused(503, "ServiceException", f"the event source could not be checked: {exc}") from exc
            raise Refused(400, "InvalidParameterValueException",
                          wording.missing_source(source_kind(esm.EventSourceArn), esm.EventSourceArn)) from exc

    def _normalized(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields = dict(fields)
        if isinstance(fields.get("FunctionName"), str):
            name, qualifier = resolve_name(fields["FunctionName"], self._account)
            if qualifier not in (None, "$LATEST"):
                raise Refused(400, "InvalidParameterValueException", wording.FUNCTION_MISSING)
            fields["FunctionName"] = name
        return fields

    async def _refuse_duplicate(self, esm: EventSourceMapping) -> None:
        existing = [*self._file().values(), *(EventSourceMapping.model_validate(s.mapping)
                                               for s in (await self._registry.all()).values())]
        for other in existing:
            if (other.FunctionName, other.EventSourceArn) == (esm.FunctionName, esm.EventSourceArn) \
                    and other.UUID != esm.UUID:
                message = wording.duplicate_mapping(source_kind(esm.EventSourceArn), esm.EventSourceArn,
                                                    esm.FunctionName, other.UUID or "")
                raise Refused(409, "ResourceConflictException", message)


def _fields(esm: EventSourceMapping) -> dict[str, Any]:
    return esm.model_dump(mode="json", exclude_none=True)
