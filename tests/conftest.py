"""Session-wide real servers and a helper that runs the broker from a config file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from broker.app import App
from broker.config import load_config
from broker.embedded import RedisServer
from broker.observability.metrics import Metrics
from tests.servers import ACCOUNT, Aws, Kinesalite, MotoServer, RecordingTarget, prepare_node_packages


def pytest_sessionstart(session: pytest.Session) -> None:
    """The whole suite installs its npm packages from the start, beside the first tests (under xdist,
    once, in the controller); the tests that need them wait for them. A partial run installs what
    its tests need when they need it."""
    if hasattr(session.config, "workerinput"):
        return
    if [Path(a).resolve() for a in session.config.args] == [Path(__file__).resolve().parent]:
        prepare_node_packages()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kinesalite() -> Iterator[Kinesalite]:
    why = Kinesalite.missing()
    if why:
        pytest.skip(why)
    server = Kinesalite()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A client of the session's redis-server, flushed for this test."""
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:
    moto_server.reset()
    client = Aws(moto_server.url)
    yield client
    client.close()


@pytest.fixture
async def target() -> AsyncIterator[RecordingTarget]:
    t = RecordingTarget()
    await t.start()
    yield t
    await t.stop()


def broker_settings(redis_server: RedisServer, moto_server: MotoServer | Kinesalite, tmp_path: Path,
                    **overrides: Any) -> dict[str, Any]:
    """Broker settings that compress AWS's fixed delays for tests."""
    return {
        "aws_endpoint_url": moto_server.url,
        "redis_url": redis_server.url,
        "data_dir": str(tmp_path / "data"),
        "api": {"host": "127.0.0.1", "port": 0},
        "drain_timeout_seconds": 5,
        "sqs_wait_time_seconds": 1,
        "retry_backoff_base_seconds": 0.05,
        "retry_backoff_max_seconds": 0.5,
        "heartbeat_interval_seconds": 1,
        "config_reload_interval_seconds": 0.2,
        "log_format": "json",
        # kinesalite has no STS to ask the account of: name it (moto's answers GetCallerIdentity)
        **({"account_id": ACCOUNT} if isinstance(moto_server, Kinesalite) else {}),
        **overrides,
    }


class BrokerRunner:
    """Start the broker in-process from a config file written by the test."""

    def __init__(self, redis_server: RedisServer, moto_server: MotoServer | Kinesalite, tmp_path: Path) -> None:
        self._redis = redis_server
        self._moto = moto_server
        self._tmp = tmp_path

    def write_config(self, functions: dict[str, Any], mappings: list[dict[str, Any]], **settings: Any) -> Path:
        doc = {
            "broker": broker_settings(self._redis, self._moto, self._tmp, **settings),
            "functions": functions,
            "event_source_mappings": mappings,
        }
        path = self._tmp / "broker.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    @contextlib.asynccontextmanager
    async def run(self, functions: dict[str, Any], mappings: list[dict[str, Any]], clock: Any = None,
                  **settings: Any) -> AsyncIterator[App]:
        path = self.write_config(functions, mappings, **settings)
        app = App(load_config(path, env={}), metrics=Metrics(), clock=clock, config_path=path)
        task = asyncio.create_task(app.run())
        started = asyncio.create_task(app.started.wait())
        done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            started.cancel()
            task.result()  # raises the start-up error
        try:
            yield app
        finally:
            app.request_stop()
            await asyncio.wait_for(task, 30)


async def _flush(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    await client.flushall()  # checkpoints of an earlier test must not leak into this one
    await client.aclose()


@pytest.fixture
async def broker(redis_server: RedisServer, moto_server: MotoServer, tmp_path: Path) -> BrokerRunner:
    await _flush(redis_server)
    return BrokerRunner(redis_server, moto_server, tmp_path)


@pytest.fixture
async def kinesalite_broker(redis_server: RedisServer, kinesalite: Kinesalite, tmp_path: Path) -> BrokerRunner:
    """A broker whose AWS endpoint is kinesalite (Kinesis only)."""
    await _flush(redis_server)
    return BrokerRunner(redis_server, kinesalite, tmp_path)


def metric(app: App, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return value or 0.0
