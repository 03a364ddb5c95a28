"""Secrets never leave through errors or logs.

Two nets: every ``user:password@`` in a URL is masked wherever it appears in text, and the secret
values the config names (API secret keys, passwords in ``redis_url`` and target URLs, the AWS keys
of the environment) are registered once at load and replaced by ``***`` in every log line, every
error body and everything the command line prints.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
_MIN_SECRET = 4  # shorter values would mask ordinary words
_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(values: Iterable[str | None]) -> None:
    """Remember secret values to mask (idempotent; values shorter than 4 characters are ignored)."""
    global _secrets  # noqa: PLW0603 - one registry per process, filled at config load
    with _lock:
        known = set(_secrets)
        for value in values:
            if value and len(value) >= _MIN_SECRET:
                known.add(value)
                known.add(unquote(value))
        _secrets = tuple(sorted(known, key=len, reverse=True))


def url_passwords(url: str | None) -> list[str]:
    """The passwords in ``url``'s userinfo parts (one URL may hold several, as Sentinel lists do)."""
    return [m.group("password") for m in _USERINFO.finditer(url or "")]


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo masked."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", url)


def scrub(text: str) -> str:
    """``text`` with URL passwords and every registered secret masked."""
    text = redact_url(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    if isinstance(value, BaseException):
        return scrub(str(value))
    return value


def log_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: every value of every log line scrubbed."""
    for key, value in event_dict.items():
        event_dict[key] = scrub_value(value)
    return event_dict
