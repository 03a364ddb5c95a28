"""One function's execution environments and the invocations waiting for them (Lambda's contract).

    invoke() ──► waiting (FIFO) ──► an environment's GET /next ──► in flight (deadline timer)
                                                                   │
              result ◄── POST /response | /error ◄──────────────────┤
              Sandbox.Timedout ◄── deadline passed (managed: killed and replaced; external: no
                                   more work until it asks for the next invocation)
              Runtime.ExitError ◄── the environment's process exited

An environment runs one invocation at a time: it gets one only from its own ``next`` call, and a
managed one has a Runtime API port of its own, so the broker always knows which process holds
which invocation. Managed environments are started when invocations wait and no environment is
free (up to ``max_environments``), ``provisioned`` of them are kept initialised, and idle ones
above that retire after ``idle_seconds``. The first invocation of a new environment waits for its
init (a cold start); init errors (``/runtime/init/error`` or an exit before the first ``next``)
fail the invocation that is next in line with the runtime's error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable

import structlog

from broker.errors import TargetThrottled
from broker.invoking.function import timeout_error_payload
from broker.observability.metrics import Metrics
from broker.runtime.environments import Environment, EnvState, Invocation, error_body
from broker.runtime.init_failures import InitFailures
from broker.runtime.processes import ManagedProcess
from broker.types import InvokeContext, InvokeResult

log = structlog.get_logger("broker.runtime")


class Dispatcher:
    def __init__(self, *, function: str, metrics: Metrics, max_environments: int, provisioned: int,
                 idle_seconds: float, init_timeout: float, start_process: Callable[[str], ManagedProcess] | None,
                 ) -> None:
        self.function = function
        self.environments: dict[str, Environment] = {}
        self._waiting: collections.deque[Invocation] = collections.deque()
        self._in_flight: dict[str, Environment] = {}  # request id -> the environment running it
        self._arrived = asyncio.Condition()
        self._max = max_environments
        self._provisioned = min(provisioned, max_environments)
        self._idle_seconds = idle_seconds
        self._init_timeout = init_timeout
        self._start_process = start_process  # None: external environments only
        self._serial = 0
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle_waiters = 0  # environments blocked in next() with nothing to hand them
        self._idle = asyncio.Event()
        self._m_init = metrics.init_duration.labels(function)
        self._m_cold = metrics.cold_starts.labels(function)
        self._m_warm = metrics.warm_starts.labels(function)
        self._m_envs = {state: metrics.environments.labels(function, state.value) for state in EnvState}
        self._m_init_failures = metrics.init_failures.labels(function)
        self._init_failures = InitFailures(claim_seconds=init_timeout)

    # ------------------------------------------------------------------ the invoker side

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        """Run once in an environment; TargetThrottled if none took it within the init timeout
        plus the function's timeout (no environment free, none could start)."""
        loop = asyncio.get_running_loop()
        inv = Invocation(payload, ctx, limit_seconds, loop.create_future(),
                         tags=structlog.contextvars.get_contextvars())
        failure = self.init_failure()
        if failure is not None:  # the environment this invocation would wait for failed its init
            inv.finish(failure, "Unhandled", time.monotonic())
            return await inv.result
        self._waiting.append(inv)
        await self._notify()
        self._scale()
        try:
            return await asyncio.wait_for(asyncio.shield(inv.result), self._init_timeout + limit_seconds)
        except TimeoutError:
            if inv in self._waiting:
                self._waiting.remove(inv)
                raise TargetThrottled(f"{self.function}: no execution environment took the invocation",
                                      reason="NoExecutionEnvironment") from None
            return await inv.result  # handed out: its deadline timer settles it
        finally:
            if inv in self._waiting:  # the caller gave up (cancelled)
                self._waiting.remove(inv)

    def init_failure(self) -> bytes | None:
        """The init error an arriving invocation gets at once instead of waiting: one no invocation
        has received yet, or the latest while new environments back off and none is ready here."""
        return self._init_failures.claim(no_environment_ready=not self._ready_or_starting())

    # ------------------------------------------------------------------ the Runtime API side

    def environment(self, key: str, process: ManagedProcess | None = None) -> Environment:
        """The environment calling from ``key`` (a managed one's port, an external one's peer)."""
        env = self.environments.get(key)
        if env is None:
            env = Environment(key, time.monotonic(), process)
            self.environments[key] = env
            if process is None:
                log.debug("environment_connected", function=self.function, environment=key)
            self._gauge()
        return env

    async def next(self, env: Environment, alive: Callable[[], bool]) -> Invocation | None:
        """The next invocation for ``env`` (long poll); None if the environment is gone."""
        if env.current is not None:  # asked again without answering: that invocation failed
            self._settle(env, error_body("Runtime.InvalidState", "the runtime asked for the next invocation "
                                          "before answering this one"), "Unhandled")
        now = time.monotonic()
        if env.cold and env.state is EnvState.INITIALIZING:
            env.init_seconds = now - env.started
            self._m_init.observe(now - env.started)
            self._init_failures.succeeded()
        env.state = EnvState.IDLE
        env.idle_since = now
        self._gauge()
        async with self._arrived:
            while True:
                if self._closed or env.key not in self.environments or not alive():
                    if env.process is None:  # an external environment's long poll ended
                        self._forget(env)
                    return None
                inv = self._take()
                if inv is not None:
                    break
                self._idle_waiters += 1
                self._update_idle()
                try:
                    with contextlib.suppress(TimeoutError):  # a closed connection is noticed within a second
                        await asyncio.wait_for(self._arrived.wait(), 1.0)
                finally:
                    self._idle_waiters -= 1
                    self._update_idle()
        self._hand(env, inv)
        return inv

    def respond(self, request_id: str, body: bytes) -> bool:
        return self._answer(request_id, body, None)

    def error(self, request_id: str, body: bytes) -> bool:
        return self._answer(request_id, body, "Unhandled")

    def init_error(self, env: Environment, body: bytes) -> None:
        """``/runtime/init/error``: the invocation next in line gets the runtime's error."""
        env.init_failed = True
        log.warning("environment_init_failed", function=self.function, environment=env.key,
                    error=_error_type(body))
        self._init_failed(body)

    def exited(self, env: Environment, code: int | None) -> None:
        """A managed environment's process ended (crash, kill, or its own exit)."""
        self.environments.pop(env.key, None)
        if env.timer is not None:
            env.timer.cancel()
        if env.current is not None:
            self._settle(env, error_body("Runtime.ExitError", f"RequestId: {env.current.ctx.request_id} Error: "
                                          f"Runtime exited with error: exit status {code}"), "Unhandled")
        elif env.cold and not env.init_failed and not self._closed:
            self._init_failed(error_body("Runtime.ExitError", f"Runtime exited during init: exit status {code}"))
        log.info("environment_stopped", function=self.function, environment=env.key, exit_code=code)
        self._gauge()
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._notify())  # its pending next() returns
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._scale()

    @property
    def pending(self) -> int:
        return sum(1 for inv in self._waiting if not inv.result.done())

    async def wait_for_idle(self, seconds: float) -> bool:
        """True once an environment is waiting for work that nothing here will give it."""
        self._update_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), seconds)
        return self._idle.is_set()

    def _update_idle(self) -> None:
        if self._idle_waiters > len(self._waiting) or self._init_failures.unclaimed():
            self._idle.set()
        else:
            self._idle.clear()

    # ------------------------------------------------------------------ pool

    def start(self) -> None:
        """Start the provisioned environments."""
        for _ in range(self._provisioned):
            self._launch()

    def retire_idle(self) -> None:
        """Stop managed environments idle past ``idle_seconds``, keeping ``provisioned`` of them."""
        now = time.monotonic()
        managed = [e for e in self.environments.values() if e.process is not None]
        spare = len(managed) - self._provisioned
        for env in sorted(managed, key=lambda e: e.idle_since):
            if spare <= 0:
                break
            if env.state is EnvState.IDLE and now - env.idle_since >= self._idle_seconds:
                assert env.process is not None
                log.info("environment_retired", function=self.function, environment=env.key,
                         idle_seconds=round(now - env.idle_since, 1))
                env.process.kill()
                spare -= 1

    async def aclose(self) -> None:
        """Stop: managed environments end; invocations still in an environment get no answer from
        here (the caller's wait runs out: unreachable, retried by its source's rules)."""
        managed = [env.process for env in self.environments.values() if env.process is not None]
        await asyncio.gather(*(process.stop() for process in managed))  # before their next() calls fail
        self._closed = True
        await self._notify()
        for env in list(self.environments.values()):
            if env.timer is not None:
                env.timer.cancel()
            env.current = None
        for inv in list(self._waiting):
            inv.finish(error_body("Runtime.Unavailable", "the broker is shutting down"), "Unhandled", time.monotonic())

    def log_line(self, env: Environment, line: str) -> None:
        """A line of a managed environment's output: logged with the tags of the invocation that
        printed it (never another task's), and kept for ``LogType: Tail``. Lines printed outside an
        invocation (init, between invocations) are the environment's own."""
        inv = env.current
        if inv is None:
            log.info("function_log", function=self.function, environment=env.key,
                     phase="init" if env.cold else "idle", message=line.rstrip("\n"))
            return
        log.info("function_log", **{**inv.tags, "function": self.function, "environment": env.key,
                                    "request_id": inv.ctx.request_id,
                                    "trace_id": inv.ctx.trace_id.partition(";")[0].removeprefix("Root="),
                                    "message": line.rstrip("\n")})
        inv.log.append(line)

    # ------------------------------------------------------------------ internals

    def _take(self) -> Invocation | None:
        while self._waiting:
            inv = self._waiting.popleft()
            if not inv.result.done():
                return inv
        return None

    def _hand(self, env: Environment, inv: Invocation) -> None:
        now = time.monotonic()
        inv.handed_at = now
        deadline_ms = int((time.time() + inv.timeout) * 1000)
        inv.ctx = dataclasses.replace(inv.ctx, deadline_ms=deadline_ms)
        if env.cold:
            env.cold = False
            inv.init_seconds = env.init_seconds
            self._m_cold.inc()
        else:
            self._m_warm.inc()
        env.current = inv
        env.state = EnvState.BUSY
        self._in_flight[inv.ctx.request_id] = env
        env.timer = asyncio.get_running_loop().call_later(inv.timeout, self._timed_out, env, inv)
        inv.log.append(f"START RequestId: {inv.ctx.request_id} Version: $LATEST\n")
        self._gauge()

    def _answer(self, request_id: str, body: bytes, error: str | None) -> bool:
        env = self._in_flight.get(request_id)
        if env is None or env.current is None or env.current.ctx.request_id != request_id:
            return False
        self._settle(env, body, error)
        return True

    def _settle(self, env: Environment, body: bytes, error: str | None) -> None:
        inv = env.current
        if inv is None:
            return
        now = time.monotonic()
        if env.timer is not None:
            env.timer.cancel()
            env.timer = None
        env.current = None
        env.state = EnvState.IDLE
        env.idle_since = now
        self._in_flight.pop(inv.ctx.request_id, None)
        duration_ms = (now - inv.handed_at) * 1000
        inv.log.append(f"END RequestId: {inv.ctx.request_id}\n")
        init = f" Init Duration: {inv.init_seconds * 1000:.2f} ms" if inv.init_seconds is not None else ""
        inv.log.append(f"REPORT RequestId: {inv.ctx.request_id}\tDuration: {duration_ms:.2f} ms\t"
                       f"Billed Duration: {max(1, int(duration_ms + 0.999))} ms{init}\n")
        inv.finish(body, error, now)
        if env.process is None:  # an external environment is known again at its next call
            self._forget(env)
        self._gauge()

    def _forget(self, env: Environment) -> None:
        if self.environments.get(env.key) is env and env.current is None:
            del self.environments[env.key]
            self._gauge()

    def _timed_out(self, env: Environment, inv: Invocation) -> None:
        if env.current is not inv:
            return
        log.warning("invocation_timed_out", function=self.function, environment=env.key,
                    request_id=inv.ctx.request_id, timeout_seconds=inv.timeout)
        env.timer = None
        self._settle(env, timeout_error_payload(inv.ctx.request_id, inv.timeout), "Unhandled")
        if env.process is not None:  # its side effects must stop: the process is replaced
            env.state = EnvState.BUSY
            env.process.kill()
        # an external environment gets work again only when it asks for the next invocation

    def _init_failed(self, body: bytes) -> None:
        """An environment failed its init: the invocation next in line gets the runtime's error (or,
        if none waits here, the next one to arrive: it may be on its way from the shared queue), and
        new environments back off while inits keep failing."""
        delay = self._init_failures.failed(body)
        if delay is not None:
            self._m_init_failures.inc()
            log.warning("environment_init_backoff", function=self.function, seconds=round(delay, 1),
                        failures_in_a_row=self._init_failures.streak, error=_error_type(body))
        inv = self._take()
        if inv is None:
            self._update_idle()  # the shared queue's bridge takes an invocation for this error
        while inv is not None:
            self._init_failures.paid()
            inv.handed_at = time.monotonic()
            inv.finish(body, "Unhandled", time.monotonic())
            # the rest wait on as long as another environment may take them; else they fail too
            inv = None if self._ready_or_starting() else self._take()
        if not self._closed and self._start_process is not None:
            self._schedule_rescale(delay or 0.0)

    def _ready_or_starting(self) -> bool:
        """An environment is free, or one is starting that no failure stopped yet."""
        return any(e.state is EnvState.IDLE or (e.state is EnvState.INITIALIZING and not e.init_failed)
                   for e in self.environments.values())

    def _schedule_rescale(self, delay: float) -> None:
        def rescale() -> None:
            self._scale()
            self._update_idle()
        asyncio.get_running_loop().call_later(delay, rescale)

    def _scale(self) -> None:
        """Start managed environments for invocations that no free or starting environment will take."""
        if self._start_process is None or self._closed or self._init_failures.backing_off():
            return
        free = sum(1 for e in self.environments.values() if e.state is not EnvState.BUSY)
        wanted = sum(1 for inv in self._waiting if not inv.result.done()) - free
        room = self._max - len(self.environments)
        for _ in range(max(0, min(wanted, room))):
            self._launch()

    def want_environment(self) -> None:
        """An invocation went to the shared queue: start a managed environment here if none is free
        (another replica's may take it first; the surplus retires when idle)."""
        if self._start_process is None or self._closed or self._init_failures.backing_off():
            return
        if all(e.state is EnvState.BUSY for e in self.environments.values()) and len(self.environments) < self._max:
            self._launch()

    def _launch(self) -> None:
        assert self._start_process is not None
        self._serial += 1
        process = self._start_process(f"{self.function}-{self._serial}")
        self.environment(process.key, process)

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    def counts(self) -> dict[str, int]:
        """This replica's environments by state (initializing, idle, busy)."""
        return {state.value: sum(1 for e in self.environments.values() if e.state is state) for state in EnvState}

    def _gauge(self) -> None:
        for state, gauge in self._m_envs.items():
            gauge.set(sum(1 for e in self.environments.values() if e.state is state))


def _error_type(body: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("errorType", ""))
    return ""
