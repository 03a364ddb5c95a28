"""The only place that reads config files and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from broker.config import rules
from broker.config.models import BrokerSettings, Config, EventSourceMapping, FunctionConfig
from broker.errors import ConfigError, ConfigIssue

ENV_PREFIX = "BROKER_"


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from ``BROKER_*`` variables, validate; raise ConfigError with every issue."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read config file {path}: {exc.strerror}")]) from exc
    return parse_config(text, env=os.environ if env is None else env, source=str(path))


def parse_config(text: str, *, env: Mapping[str, str] | None = None, source: str = "<config>") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([ConfigIssue("", f"{source} is not valid YAML{where}: {exc}")]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", f"{source} must be a mapping with sections broker, "
                                           "functions, event_source_mappings")])
    _apply_env(raw, env or {})
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        # Report the cross-field issues of the parts that did validate too: every error at once.
        partial, positions = _valid_parts(raw)
        functions = raw.get("functions")
        known = set(functions) if isinstance(functions, dict) else set()
        issues = [_issue(e) for e in exc.errors()]
        issues += rules.check(partial, positions=positions, known_functions=known)
        raise ConfigError(issues) from exc
    issues = rules.check(config)
    if issues:
        raise ConfigError(issues)
    for esm in config.event_source_mappings:
        rules.apply_defaults(esm)
    return config


def _valid_parts(raw: dict[str, Any]) -> tuple[Config, list[int]]:
    """The functions and mappings of ``raw`` that validate on their own, with mapping positions."""
    def valid(model: type[Any], value: Any) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError:
            return None

    broker = valid(BrokerSettings, raw.get("broker") or {}) or BrokerSettings()
    functions = raw.get("functions")
    functions = functions if isinstance(functions, dict) else {}
    valid_functions = {k: f for k, v in functions.items() if (f := valid(FunctionConfig, v)) is not None}
    mappings = raw.get("event_source_mappings")
    mappings = mappings if isinstance(mappings, list) else []
    checked = [(i, m) for i, v in enumerate(mappings) if (m := valid(EventSourceMapping, v)) is not None]
    partial = Config(broker=broker, functions=valid_functions, event_source_mappings=[m for _, m in checked])
    return partial, [i for i, _ in checked]


def _issue(error: Any) -> ConfigIssue:
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part) in ("function-after[_exactly_one()]",) or "[" in str(part):
            continue
        else:
            path += f".{part}" if path else str(part)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return ConfigIssue(path, message)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """``BROKER_REDIS_URL=...`` overrides ``broker.redis_url``; ``BROKER_API_PORT`` ``broker.api.port``."""
    section = raw.setdefault("broker", {})
    if not isinstance(section, dict):
        return
    for field in BrokerSettings.model_fields:
        if field == "api":
            for sub in ("host", "port"):
                value = env.get(f"{ENV_PREFIX}API_{sub.upper()}")
                if value is not None:
                    api = section.setdefault("api", {})
                    if isinstance(api, dict):
                        api[sub] = yaml.safe_load(value)
            continue
        value = env.get(f"{ENV_PREFIX}{field.upper()}")
        if value is not None:
            section[field] = yaml.safe_load(value) if value else value
