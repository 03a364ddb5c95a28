"""Live config reload: the config file is checked every few seconds (a mounted ConfigMap changes by
an atomic symlink swap, which inotify-style watching misses); a changed file that validates is
handed to the app, an invalid one is refused with a log line and a metric, and the running config
stays."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from broker.config.loader import load_config
from broker.config.models import Config
from broker.errors import ConfigError

log = structlog.get_logger("broker.config")


class ConfigWatcher:
    """``also``: the files the running config reads besides itself (API keys' secret files, which a
    Kubernetes Secret update swaps): a change of theirs reloads the config too."""

    def __init__(self, path: Path, on_failure: Callable[[], None] = lambda: None,
                 also: Callable[[], list[Path]] = list) -> None:
        self._path = path
        self._on_failure = on_failure
        self._also = also
        self._digest = self._read_digest()

    def _read_digest(self) -> str | None:
        digest = hashlib.sha256()
        try:
            digest.update(self._path.read_bytes())
        except OSError:
            return None
        for extra in self._also():
            try:
                digest.update(b"\0" + extra.read_bytes())
            except OSError:
                digest.update(b"\0(unreadable)")
        return digest.hexdigest()

    async def check(self, apply: Callable[[Config], Awaitable[None]]) -> None:
        """Apply the file if it changed since the last look (an invalid one is refused and logged)."""
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return
        self._digest = digest
        try:
            config = load_config(self._path)
        except ConfigError as exc:
            self._on_failure()
            log.error("config_reload_refused", path=str(self._path), errors=[str(i) for i in exc.issues])
            return
        await apply(config)
