"""A second runtime: AWS's Node.js runtime interface client (npm's ``aws-lambda-ric``, unmodified)
as an external environment started by the test, and as managed environments the broker starts.
Installed once into ``.cache/aws-lambda-ric`` (from the start of a run, see conftest); skipped with the reason if Node or npm is
missing or the package cannot be installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BrokerRunner
from tests.servers import npm_install

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ROOT / "tests" / "handlers" / "node"
# The first test waits for the package's install (a native build: about two minutes on two busy cores).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def node_ric() -> Path:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH: the Node runtime client test needs Node.js")
    script, why = npm_install("aws-lambda-ric")
    if why:
        pytest.skip(why)
    return script


@pytest.fixture
def node_env(node_ric: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}", "LAMBDA_TASK_ROOT": str(HANDLERS),
               "_HANDLER": "app.handler", "AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/f",
               "AWS_LAMBDA_LOG_STREAM_NAME": "test"}
        proc = subprocess.Popen(["node", str(node_ric), "app.handler"], cwd=HANDLERS, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


async def _invoke(app: Any, payload: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{app.api_port}/2015-03-31/functions/f/invocations", json=payload) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_node_runtime_client_as_an_external_environment(broker: BrokerRunner, node_env: Any) -> None:
    async with broker.run({"f": {"Target": {"Runtime": {"ApiPort": 0}}, "Timeout": 10}}, []) as app:
        proc = node_env(app.runtimes["f"].port)
        for n in range(3):
            status, body = await _invoke(app, {"n": n})
            assert status == 200, body
            assert body["runtime"] == "node"
            assert body["pid"] == proc.pid
            assert body["got"] == {"n": n}


async def test_node_runtime_client_in_managed_environments(broker: BrokerRunner, node_ric: Path) -> None:
    functions = {"f": {"Target": {"Runtime": {"Command": ["node", str(node_ric), "app.handler"],
                                              "WorkingDirectory": str(HANDLERS)}}, "Timeout": 10}}
    async with broker.run(functions, []) as app:
        status, body = await _invoke(app, {"n": 1})
        assert status == 200, body
        assert body["runtime"] == "node"
        assert body["requestId"]


@pytest.mark.parametrize("size", [100, 8 * 1024, 100 * 1024, 900 * 1024])
async def test_node_function_errors_of_any_size_reach_the_caller(broker: BrokerRunner, node_env: Any, size: int) -> None:
    """aws-lambda-ric sends the error's X-Ray cause as a header: a big one must not make it fail."""
    async with broker.run({"f": {"Target": {"Runtime": {"ApiPort": 0}}, "Timeout": 10}}, []) as app:
        proc = node_env(app.runtimes["f"].port)
        status, error = await _invoke(app, {"fail_bytes": size})
        assert status == 200
        assert error["errorType"] == "Error", {k: str(v)[:200] for k, v in error.items()}
        assert len(error["errorMessage"]) == size
        status, body = await _invoke(app, {"n": 1})
        assert status == 200, body
        assert body["pid"] == proc.pid, "the same environment answers after the error"
