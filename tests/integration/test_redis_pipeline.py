"""AutoPipeline against a real redis-server, on its direct link and on redis-py's Pipeline (a
Cluster's path): concurrent commands share round trips, each keeps its own reply or error, scripts
survive a SCRIPT FLUSH, a kept connection the server closed is replaced, and a dead server fails
every caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from broker.embedded import free_port
from broker.redis.pipeline import AutoPipeline


@pytest.fixture(params=[True, False], ids=["direct", "redis-py-pipeline"])
def direct(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_concurrent_commands_share_round_trips(redis: Any, direct: bool) -> None:
    pipe = AutoPipeline(redis, direct=direct)
    replies = await asyncio.gather(*(pipe.execute("INCRBY", "n", i) for i in range(1, 501)))
    assert sorted(int(r) for r in replies)[-1] == sum(range(1, 501))
    assert len(set(replies)) == 500  # every caller got its own reply
    assert int(await redis.get("n")) == sum(range(1, 501))
    assert pipe.round_trips <= 500 // 256 + 3, pipe.round_trips


async def test_a_lone_command_is_sent_at_once(redis: Any, direct: bool) -> None:
    pipe = AutoPipeline(redis, direct=direct)
    assert await asyncio.wait_for(pipe.execute("SET", "k", "v"), 1.0)
    assert await pipe.execute("GET", "k") == b"v"


async def test_an_error_stays_with_its_command(redis: Any, direct: bool) -> None:
    await redis.set("text", "not a number")
    pipe = AutoPipeline(redis, direct=direct)
    ok, bad, ok2 = await asyncio.gather(pipe.execute("INCR", "a"), pipe.execute("INCR", "text"),
                                        pipe.execute("INCR", "b"), return_exceptions=True)
    assert (ok, ok2) == (1, 1)
    assert isinstance(bad, ResponseError)
    assert "not an integer" in str(bad)


async def test_scripts_are_reloaded_after_a_flush(redis: Any, direct: bool) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipe = AutoPipeline(redis, direct=direct)
    assert await pipe.script(script, ["s"], [5]) == 5  # never loaded: NOSCRIPT, then run on its own
    await redis.script_flush()
    results = await asyncio.gather(*(pipe.script(script, ["s"], [1]) for _ in range(10)))
    assert sorted(results) == list(range(6, 16))
    assert await pipe.script(script, ["s"], [1]) == 16  # loaded again: back in the pipeline


async def test_every_caller_fails_when_redis_is_away(direct: bool) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    pipe = AutoPipeline(client, direct=direct)
    results = await asyncio.gather(*(pipe.execute("PING") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await client.aclose()


async def test_close_waits_for_queued_commands(redis: Any, direct: bool) -> None:
    pipe = AutoPipeline(redis, max_in_flight=1, max_batch=2, direct=direct)
    futures = [asyncio.ensure_future(pipe.execute("RPUSH", "list", i)) for i in range(7)]
    await asyncio.sleep(0)
    await pipe.aclose()
    assert all(f.done() for f in futures)
    assert [int(x) for x in await redis.lrange("list", 0, -1)] == list(range(7))  # sent in submission order


@pytest.mark.parametrize("batch", [1, 3])
async def test_batches_are_capped(redis: Any, batch: int, direct: bool) -> None:
    pipe = AutoPipeline(redis, max_batch=batch, max_in_flight=1, direct=direct)
    await asyncio.gather(*(pipe.execute("INCR", "c") for _ in range(6)))
    assert pipe.round_trips == -(-6 // batch)


async def test_a_command_whose_caller_gave_up_before_the_send_is_not_sent(redis: Any, direct: bool) -> None:
    pipe = AutoPipeline(redis, direct=direct)
    given_up = asyncio.ensure_future(pipe.execute("SET", "abandoned", "1"))
    kept = asyncio.ensure_future(pipe.execute("SET", "kept", "1"))
    given_up.cancel()
    await kept
    assert await redis.exists("abandoned") == 0
    assert await redis.get("kept") == b"1"


async def test_a_connection_the_server_closed_is_replaced(redis_server: Any) -> None:
    """On the direct link (redis-py's Pipeline fails that trip, measured: ConnectionError)."""
    client = aioredis.from_url(redis_server.url)
    pipe = AutoPipeline(client)
    assert await pipe.execute("SET", "before", "1")
    killer = aioredis.from_url(redis_server.url)
    killed = await killer.client_kill_filter(_type="normal", skipme=True)  # the pipeline's idle connection too
    assert killed >= 1
    replies = await asyncio.gather(*(pipe.execute("INCR", "after") for _ in range(5)))
    assert sorted(replies) == [1, 2, 3, 4, 5], "sent once more on a new connection, each command once"
    await pipe.aclose()
    for c in (client, killer):
        await c.aclose()
