"""What the commands share: the request function's type and how an answer is printed."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

Call = Callable[..., tuple[int, Any]]


def said(status: int, answer: Any) -> int:
    """Print the API's answer: JSON on stdout, or its error on stderr (exit status 1)."""
    if status >= 400:
        message = answer.get("message", answer) if isinstance(answer, dict) else answer
        print(f"broker: {status}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


def endpoint_refused(command: str, endpoint: str) -> bool:
    """True (said on stderr) unless ``endpoint`` is an http:// or https:// URL."""
    if endpoint.startswith(("http://", "https://")):
        return False
    print(f"broker {command}: --endpoint {endpoint!r} must be an http:// or https:// URL", file=sys.stderr)
    return True
