"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.servers import RecordingTarget


def function(target: RecordingTarget, **extra: Any) -> dict[str, Any]:
    return {"f": {"Target": {"Url": target.url}, "Timeout": 2, **extra}}


async def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def keyed(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Kinesis records whose data is {"n": ...}: the numbers per partition key, in delivery order."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for r in records:
        out[r["kinesis"]["partitionKey"]].append(json.loads(base64.b64decode(r["kinesis"]["data"]))["n"])
    return out


def respond_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)
