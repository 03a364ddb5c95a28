"""Lambda's REST error responses: ``X-Amzn-ErrorType`` header plus ``{"Type", "message"}`` body."""

from __future__ import annotations

import json

from aiohttp import web


def aws_error(status: int, code: str, message: str, *, error_type: str = "User",
              extra: dict[str, str] | None = None, headers: dict[str, str] | None = None
              ) -> web.Response:
    body = {"Type": error_type, "message": message, **(extra or {})}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json",
                        headers={"X-Amzn-ErrorType": code, **(headers or {})})
