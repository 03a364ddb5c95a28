"""A broker killed with SIGKILL while events are queued and some are mid-invocation loses none:
after a restart every accepted event reaches the target (docs/aws-semantics.md, "Async retries"; docs/design.md, "Redis layout")."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from broker.embedded import RedisServer, free_port, wait_for_port
from tests.conftest import broker_settings
from tests.integration.helpers import respond_json
from tests.servers import Aws, Call, MotoServer, RecordingTarget


async def test_sigkill_with_events_queued_loses_nothing(redis_server: RedisServer, moto_server: MotoServer, aws: Aws,
                                                        target: RecordingTarget, tmp_path: Path) -> None:
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    release = asyncio.Event()

    async def slow(event: Any, call: Call) -> web.Response:
        await asyncio.wait_for(release.wait(), 60)  # the first replica dies while these hang
        return respond_json({})

    target.responder = slow
    port = free_port()
    config = tmp_path / "async.yaml"
    config.write_text(yaml.safe_dump({
        "broker": broker_settings(redis_server, moto_server, tmp_path, api={"host": "127.0.0.1", "port": port},
                                  async_concurrency=8, async_claim_idle_seconds=1, replica_id="r1"),
        "functions": {"f": {"Target": {"Url": target.url}, "Timeout": 5}},
    }))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))

    proc = start()
    try:
        await asyncio.to_thread(_wait_port, port)
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"
        async with aiohttp.ClientSession() as http:
            async def send(i: int) -> int:
                async with http.post(url, data=json.dumps({"i": i}), headers={"X-Amz-Invocation-Type": "Event"}) as r:
                    return r.status
            statuses = await asyncio.gather(*(send(i) for i in range(1000)))
        assert set(statuses) == {202}
        await target.wait_for(lambda calls: len(calls) >= 8)  # eight invocations hang in flight
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        target.responder = None  # the target recovers: answers at once
        release.set()
        proc = start()
        await target.wait_for(lambda calls: len({c.event["i"] for c in calls}) >= 1000, timeout=90)
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
    seen = [c.event["i"] for c in target.calls]
    assert sorted(set(seen)) == list(range(1000))
    assert len(seen) - 1000 <= 8  # only the events in flight at the kill ran twice


def _wait_port(port: int) -> None:
    wait_for_port(port, None, "broker", timeout=30)
