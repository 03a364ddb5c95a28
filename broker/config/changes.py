"""What a reload of the config file changes, decided from the old and the new config alone: the
broker applies it (functions rebuilt, mappings restarted) without a restart, except the ``broker:``
settings that need one (named in the log)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.config.models import Config, EventSourceMapping

_LIVE = {"api": {"credentials"}}  # broker settings applied without a restart (key rotation)


@dataclass(frozen=True)
class Changes:
    restart_required: list[str]  # broker settings that changed and apply only after a restart
    functions: set[str]  # added, removed or changed: rebuilt (their mappings restart)
    stopped_mappings: list[str]  # removed, or changed beyond Enabled, or of a changed function


def changes(old: Config, new: Config) -> Changes:
    """Also carries over to ``new`` what the running broker keeps: its broker settings (with the new
    API keys) and the account id found at start when the file names none."""
    if not new.broker.account_id:
        new.broker.account_id = old.broker.account_id
    restart = sorted(k for k, v in new.broker.model_dump(exclude=_LIVE).items()
                     if old.broker.model_dump(exclude=_LIVE)[k] != v)
    if old.broker.api.authenticated != new.broker.api.authenticated and "api" not in restart:
        restart.append("api")  # turning authentication on or off needs a restart; rotating keys does not
    functions = {n for n in set(old.functions) | set(new.functions) if old.functions.get(n) != new.functions.get(n)}
    new_maps = {m.UUID: m for m in new.event_source_mappings}
    stopped = [m.UUID or "" for m in old.event_source_mappings
               if m.UUID not in new_maps or m.FunctionName in functions
               or _without_enabled(m) != _without_enabled(new_maps[m.UUID])]
    if old.broker.api.authenticated and new.broker.api.authenticated:
        old.broker.api.credentials = new.broker.api.credentials
    new.broker = old.broker
    return Changes(restart, functions, stopped)


def _without_enabled(esm: EventSourceMapping) -> dict[str, Any]:
    return esm.model_dump(exclude={"Enabled"})
