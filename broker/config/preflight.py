"""``broker validate``'s checks that need this machine, not just the file: Handler modules that
import (each in a subprocess with a time limit, so a module that hangs or crashes on import cannot
take validate with it) and Runtime commands that exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from broker.config.models import Config, FunctionConfig
from broker.errors import ConfigIssue

_IMPORT_TIMEOUT_SECONDS = 20
_PROBE = ("import importlib, sys; m = importlib.import_module(sys.argv[1]); "
          "f = getattr(m, sys.argv[2], None); sys.exit(0 if callable(f) else 3)")


def check(config: Config, *, cwd: Path | None = None) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for name, fn in config.functions.items():
        issues += check_function(name, fn, cwd=cwd)
    return issues


def check_function(name: str, fn: FunctionConfig, *, cwd: Path | None = None) -> list[ConfigIssue]:
    """What ``broker validate`` and ``broker run`` both refuse for one function (run calls this
    before it starts the function, so the two never disagree)."""
    here = (cwd or Path.cwd()).resolve()
    target = fn.Target
    if target.Handler:
        return _check_handler(f"functions.{name}.Target.Handler", target.Handler, here)
    if target.Runtime and target.Runtime.Command:
        return _check_command(f"functions.{name}.Target.Runtime.Command", target.Runtime.Command,
                              (target.Runtime.WorkingDirectory or here))
    return []


def _check_handler(path: str, handler: str, cwd: Path) -> list[ConfigIssue]:
    module, _, attr = handler.partition(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH")) if p)}
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE, module, attr.split(".")[0]], cwd=cwd, env=env,  # noqa: S603
                                capture_output=True, text=True, timeout=_IMPORT_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return [ConfigIssue(path, f"importing {module} did not finish within {_IMPORT_TIMEOUT_SECONDS} s")]
    if result.returncode == 3:
        return [ConfigIssue(path, f"{module} has no callable {attr}")]
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["it exited with code " + str(result.returncode)])[-1]
        return [ConfigIssue(path, f"cannot import {module} (from {cwd}): {last}")]
    return []


def _check_command(path: str, command: list[str], cwd: Path) -> list[ConfigIssue]:
    program = command[0]
    if os.sep in program:
        found = (cwd / program) if not Path(program).is_absolute() else Path(program)
        if found.exists() and os.access(found, os.X_OK):
            return []
    elif shutil.which(program):
        return []
    return [ConfigIssue(path, f"{program} is not an executable on PATH (or under {cwd})")]
