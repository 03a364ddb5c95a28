"""The only place that reads config files and the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from broker import redaction
from broker.config import rules, wording
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
        what = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise ConfigError([ConfigIssue("", f"{source} is not valid YAML{where}: {what or exc}")]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", f"{source} must be a mapping with sections broker, "
                                           "functions, event_source_mappings")])
    env = env or {}
    expansion_issues: list[ConfigIssue] = []
    raw = _expand(raw, env, "", expansion_issues)
    if expansion_issues:
        raise ConfigError(expansion_issues)
    from_env = _apply_env(raw, env)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        # Report the cross-field issues of the parts that did validate too: every error at once.
        partial, positions = _valid_parts(raw)
        functions = raw.get("functions")
        known = set(functions) if isinstance(functions, dict) else set()
        issues = [_named_variable(_issue(e), from_env) for e in exc.errors()]
        issues += rules.check(partial, positions=positions, known_functions=known)
        raise ConfigError(issues) from exc
    issues = rules.check(config) + _read_secret_files(config)
    if issues:
        raise ConfigError(issues)
    for esm in config.event_source_mappings:
        rules.apply_defaults(esm)
    _register_secrets(config, env)
    return config


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, env: Mapping[str, str], path: str, issues: list[ConfigIssue]) -> Any:
    """``${NAME}`` in any string value is replaced by the environment variable NAME."""
    if isinstance(value, str):
        def variable(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                issues.append(ConfigIssue(path, f"environment variable {name} is not set"))
                return ""
            return env[name]
        return _VARIABLE.sub(variable, value)
    if isinstance(value, dict):
        return {k: _expand(v, env, f"{path}.{k}" if path else str(k), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, f"{path}[{i}]", issues) for i, v in enumerate(value)]
    return value


def _read_secret_files(config: Config) -> list[ConfigIssue]:
    """Each ``SecretAccessKeyFile`` read now (a Kubernetes Secret mounted as files)."""
    issues = []
    for i, cred in enumerate(config.broker.api.credentials):
        if cred.SecretAccessKeyFile is None:
            continue
        try:
            secret = cred.SecretAccessKeyFile.read_text(encoding="utf-8").strip()
        except OSError as exc:
            issues.append(ConfigIssue(f"broker.api.credentials[{i}].SecretAccessKeyFile",
                                      f"cannot read {cred.SecretAccessKeyFile}: {exc.strerror}"))
            continue
        if not secret:
            issues.append(ConfigIssue(f"broker.api.credentials[{i}].SecretAccessKeyFile",
                                      f"{cred.SecretAccessKeyFile} is empty"))
        cred.SecretAccessKey = secret
    return issues


def _register_secrets(config: Config, env: Mapping[str, str]) -> None:
    """Every secret the config or the environment holds, masked in logs and errors from now on."""
    s = config.broker
    urls = [s.redis_url, s.aws_endpoint_url] + [u for f in config.functions.values()
                                                for u in (f.Target.Url, f.Target.EndpointUrl)]
    redaction.register([p for url in urls for p in redaction.url_passwords(url)])
    redaction.register([c.SecretAccessKey for c in s.api.credentials])
    redaction.register([env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"),
                        os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")])


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
    loc = error["loc"]
    if len(loc) > 2 and loc[0] == "event_source_mappings" and error["type"] != "extra_forbidden":
        # a mapping's field: Lambda's own sentence, as the API answers it
        return ConfigIssue(path, wording.validation_error({**error, "loc": loc[2:]})[1])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return ConfigIssue(path, message)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """``BROKER_REDIS_URL=...`` overrides ``broker.redis_url``; ``BROKER_API_PORT`` ``broker.api.port``.
    Returns the config paths set this way, with the variable that set each."""
    section = raw.setdefault("broker", {})
    applied: dict[str, str] = {}
    if not isinstance(section, dict):
        return applied
    for field in BrokerSettings.model_fields:
        if field == "api":
            for sub in ("host", "port"):
                name = f"{ENV_PREFIX}API_{sub.upper()}"
                value = env.get(name)
                if value is not None:
                    api = section.setdefault("api", {})
                    if isinstance(api, dict):
                        api[sub] = yaml.safe_load(value)
                        applied[f"broker.api.{sub}"] = name
            continue
        name = f"{ENV_PREFIX}{field.upper()}"
        value = env.get(name)
        if value is not None:
            section[field] = yaml.safe_load(value) if value else value
            applied[f"broker.{field}"] = name
    return applied


def _named_variable(issue: ConfigIssue, from_env: Mapping[str, str]) -> ConfigIssue:
    """An error in a value that came from a ``BROKER_*`` variable names the variable."""
    variable = from_env.get(issue.path)
    if variable is None:
        return issue
    return ConfigIssue(issue.path, f"{issue.message} (set by the environment variable {variable})")
