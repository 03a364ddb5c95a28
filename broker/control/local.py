"""What the API and the control plane see of the mappings this replica runs: a small interface
(describe, pause or resume, replace, remove), not the runners behind it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from broker.config.models import EventSourceMapping
from broker.types import SourceKind


@dataclass(frozen=True)
class MappingStatus:
    """A mapping as this replica runs it, at the moment it was asked."""

    esm: EventSourceMapping
    kind: SourceKind
    function_arn: str
    from_api: bool  # created through Lambda's API (kept in Redis), not declared in the file
    file_enabled: bool  # what the config file says; a pause or resume through the API may differ
    state: str
    reason: str
    last_modified: float
    last_processing_result: str


class LocalMappings(Protocol):
    def __iter__(self) -> Iterator[str]:
        """The UUIDs of the mappings this replica runs."""

    def status(self, uuid: str) -> MappingStatus | None:
        """The mapping as run here, or None if this replica does not run it."""

    def set_enabled(self, uuid: str, enabled: bool) -> None:
        """Pause (False) or resume (True) a mapping run here."""

    async def replace(self, esm: EventSourceMapping, *, last_modified: float) -> None:
        """Run an API mapping here as defined now (stopping the one it replaces)."""

    async def remove(self, uuid: str) -> None:
        """Stop a mapping (its batches in flight finish) and forget it."""
