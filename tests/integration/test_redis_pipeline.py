"""AutoPipeline against a real redis-server: concurrent commands share round trips, each keeps its
own reply or error, scripts survive a SCRIPT FLUSH, and a dead server fails every caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from broker.embedded import free_port
from broker.redis_state import AutoPipeline


class CountingRedis:
    """The real client, counting the pipelines (round trips) the AutoPipeline opens."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pipelines = 0

    def pipeline(self, **kwargs: Any) -> Any:
        self.pipelines += 1
        return self.client.pipeline(**kwargs)


async def test_concurrent_commands_share_round_trips(redis: Any) -> None:
    counting = CountingRedis(redis)
    pipe = AutoPipeline(counting)
    replies = await asyncio.gather(*(pipe.execute("INCRBY", "n", i) for i in range(1, 501)))
    assert sorted(int(r) for r in replies)[-1] == sum(range(1, 501))
    assert len(set(replies)) == 500  # every caller got its own reply
    assert int(await redis.get("n")) == sum(range(1, 501))
    assert counting.pipelines <= 500 // 256 + 3, counting.pipelines


async def test_a_lone_command_is_sent_at_once(redis: Any) -> None:
    pipe = AutoPipeline(redis)
    assert await asyncio.wait_for(pipe.execute("SET", "k", "v"), 1.0)
    assert await pipe.execute("GET", "k") == b"v"


async def test_an_error_stays_with_its_command(redis: Any) -> None:
    await redis.set("text", "not a number")
    pipe = AutoPipeline(redis)
    ok, bad, ok2 = await asyncio.gather(pipe.execute("INCR", "a"), pipe.execute("INCR", "text"),
                                        pipe.execute("INCR", "b"), return_exceptions=True)
    assert (ok, ok2) == (1, 1)
    assert isinstance(bad, ResponseError)
    assert "not an integer" in str(bad)


async def test_scripts_are_reloaded_after_a_flush(redis: Any) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipe = AutoPipeline(redis)
    assert await pipe.script(script, ["s"], [5]) == 5  # never loaded: NOSCRIPT, then run on its own
    await redis.script_flush()
    results = await asyncio.gather(*(pipe.script(script, ["s"], [1]) for _ in range(10)))
    assert sorted(results) == list(range(6, 16))
    assert await pipe.script(script, ["s"], [1]) == 16  # loaded again: back in the pipeline


async def test_every_caller_fails_when_redis_is_away() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    pipe = AutoPipeline(client)
    results = await asyncio.gather(*(pipe.execute("PING") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await client.aclose()


async def test_close_waits_for_queued_commands(redis: Any) -> None:
    pipe = AutoPipeline(redis, max_in_flight=1, max_batch=2)
    futures = [asyncio.ensure_future(pipe.execute("RPUSH", "list", i)) for i in range(7)]
    await asyncio.sleep(0)
    await pipe.aclose()
    assert all(f.done() for f in futures)
    assert [int(x) for x in await redis.lrange("list", 0, -1)] == list(range(7))  # sent in submission order


@pytest.mark.parametrize("batch", [1, 3])
async def test_batches_are_capped(redis: Any, batch: int) -> None:
    counting = CountingRedis(redis)
    pipe = AutoPipeline(counting, max_batch=batch, max_in_flight=1)
    await asyncio.gather(*(pipe.execute("INCR", "c") for _ in range(6)))
    assert counting.pipelines == -(-6 // batch)


async def test_a_command_whose_caller_gave_up_before_the_send_is_not_sent(redis: Any) -> None:
    pipe = AutoPipeline(redis)
    given_up = asyncio.ensure_future(pipe.execute("SET", "abandoned", "1"))
    kept = asyncio.ensure_future(pipe.execute("SET", "kept", "1"))
    given_up.cancel()
    await kept
    assert await redis.exists("abandoned") == 0
    assert await redis.get("kept") == b"1"
