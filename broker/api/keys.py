"""The API's access keys, as the config gives them, and what each may do (IAM-style actions and
resources with ``*`` and ``?`` wildcards)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from broker.config.models import ApiSettings


@dataclass(frozen=True)
class Key:
    access_key_id: str
    secret: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, action: str, resource: str) -> bool:
        """IAM-style: ``*`` and ``?`` wildcards; actions compare case-insensitively."""
        return (any(_matches(a.lower(), action.lower()) for a in self.actions)
                and any(_matches(r, resource) for r in self.resources))


def keys_of(api: ApiSettings) -> list[Key]:
    """The SigV4 keys the config gives (secret files already read)."""
    return [Key(c.AccessKeyId, c.SecretAccessKey or "", tuple(c.Actions), tuple(c.Resources)) for c in api.credentials]


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))
