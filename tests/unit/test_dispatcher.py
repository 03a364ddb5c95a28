"""The dispatcher's contract with environments, driven as a runtime client drives it (next, then
response or error), without processes: one invocation per environment, results to the right
caller, timeouts, an environment that asks again without answering, and init errors that reach the
invocation that waited."""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.errors import TargetThrottled
from broker.observability.metrics import Metrics
from broker.runtime.dispatch import Dispatcher
from broker.types import InvokeContext


def dispatcher(init_timeout: float = 0.5) -> Dispatcher:
    return Dispatcher(function="f", metrics=Metrics(), max_environments=4, provisioned=0, idle_seconds=60,
                      init_timeout=init_timeout, start_process=None)


def ctx(n: int) -> InvokeContext:
    return InvokeContext(f"req-{n}", "f", "arn:aws:lambda:us-east-1:000000000000:function:f", 0)


async def serve(d: Dispatcher, key: str, answers: int, *, fail: bool = False) -> list[str]:
    """An external environment's loop, as the Runtime API sees it (each call names its caller): take
    an invocation, answer it (echo, or an error)."""
    seen = []
    for _ in range(answers):
        env = d.environment(key)
        inv = await d.next(env, alive=lambda: True)
        assert inv is not None
        seen.append(inv.ctx.request_id)
        body = json.dumps({"echo": json.loads(inv.payload), "by": env.key}).encode()
        (d.error if fail else d.respond)(inv.ctx.request_id, body)
    return seen


@pytest.mark.timeout(5)
async def test_each_invocation_runs_once_in_one_environment_and_answers_its_caller() -> None:
    d = dispatcher()
    servers = [asyncio.create_task(serve(d, f"external:{n}", 3)) for n in range(2)]
    results = await asyncio.gather(*(d.invoke(json.dumps(n).encode(), ctx(n), 5) for n in range(6)))
    assert [json.loads(r.payload)["echo"] for r in results] == list(range(6)), "each caller got its own answer"
    seen = [rid for task in await asyncio.gather(*servers) for rid in task]
    assert sorted(seen) == sorted(f"req-{n}" for n in range(6)), "each invocation ran once"
    assert all(r.ok for r in results)
    assert all(r.log.startswith("START RequestId: ") for r in results)


@pytest.mark.timeout(5)
async def test_a_function_error_is_the_invocations_result() -> None:
    d = dispatcher()
    server = asyncio.create_task(serve(d, "external:1", 1, fail=True))
    result = await d.invoke(b"{}", ctx(1), 5)
    await server
    assert result.function_error == "Unhandled"


@pytest.mark.timeout(5)
async def test_past_its_deadline_an_invocation_times_out() -> None:
    d = dispatcher()
    env = d.environment("external:slow")
    taker = asyncio.create_task(d.next(env, alive=lambda: True))
    result = await d.invoke(b"{}", ctx(1), 0.2)
    assert (await taker) is not None
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload)["errorType"] == "Sandbox.Timedout"
    assert not d.respond("req-1", b"{}"), "a late answer belongs to no invocation"


@pytest.mark.timeout(5)
async def test_asking_again_without_answering_fails_the_invocation_in_hand() -> None:
    d = dispatcher()
    env = d.environment("external:forgetful")

    async def forgetful() -> None:
        assert await d.next(env, alive=lambda: True) is not None
        await d.next(env, alive=lambda: False)  # asks for more without answering

    asker = asyncio.create_task(forgetful())
    result = await d.invoke(b"{}", ctx(1), 5)
    await asker
    assert json.loads(result.payload)["errorType"] == "Runtime.InvalidState"


@pytest.mark.timeout(5)
async def test_no_environment_is_a_throttle_but_an_init_error_is_the_runtimes() -> None:
    d = dispatcher(init_timeout=0.1)
    with pytest.raises(TargetThrottled):
        await d.invoke(b"{}", ctx(1), 0.1)
    env = d.environment("external:broken")
    waiting = asyncio.create_task(d.invoke(b"{}", ctx(2), 5))
    await asyncio.sleep(0.05)
    d.init_error(env, b'{"errorType": "Runtime.ImportModuleError", "errorMessage": "no module"}')
    result = await waiting
    assert json.loads(result.payload)["errorType"] == "Runtime.ImportModuleError"
    later = await d.invoke(b"{}", ctx(3), 5)  # nothing is ready while restarts back off: the same error at once
    assert json.loads(later.payload)["errorType"] == "Runtime.ImportModuleError"
