"""Real servers for the tests: redis-server and the AWS emulator (moto_server), each in its own
process on a free loopback port, plus a recording HTTP target the tests can program."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml
from aiohttp import web

from broker.embedded import free_port, wait_for_port

ACCOUNT = "000000000000"
REGION = "us-east-1"


class MotoServer:
    """moto's standalone server in its own process, with the embedded mode's atomic SQS queues
    (``broker.emulator``); ``reset()`` between tests."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "MOTO_ACCOUNT_ID": ACCOUNT}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "broker.emulator", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self._proc, "moto_server", timeout=60)

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=10)


class Aws:
    """Blocking boto3 clients for the test side, run off the event loop."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, endpoint_url=self.endpoint, region_name=REGION,
                aws_access_key_id="testing", aws_secret_access_key="testing")
        return self._clients[service]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    async def call(self, service: str, operation: str, **kwargs: Any) -> Any:
        fn = getattr(self.client(service), operation)
        return await asyncio.to_thread(fn, **kwargs)

    # -- SQS helpers
    async def create_queue(self, name: str, **attributes: Any) -> str:
        attrs = {k: str(v) for k, v in attributes.items()}
        if name.endswith(".fifo"):
            attrs.setdefault("FifoQueue", "true")
        return str((await self.call("sqs", "create_queue", QueueName=name, Attributes=attrs))["QueueUrl"])

    async def send(self, url: str, *bodies: str, **kwargs: Any) -> list[str]:
        return [(await self.call("sqs", "send_message", QueueUrl=url, MessageBody=body, **kwargs))["MessageId"]
                for body in bodies]

    async def send_batch(self, url: str, bodies: list[str], **kwargs: Any) -> None:
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": b, **kwargs} for i, b in enumerate(bodies[start:start + 10])]
            await self.call("sqs", "send_message_batch", QueueUrl=url, Entries=entries)

    async def depth(self, url: str) -> tuple[int, int]:
        """(visible, in flight)"""
        attrs = (await self.call("sqs", "get_queue_attributes", QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]))["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    async def drain(self, url: str, expect: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Receive (and delete) ``expect`` messages from a queue, e.g. a DLQ."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            resp = await self.call("sqs", "receive_message", QueueUrl=url, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=1, MessageAttributeNames=["All"],
                                   MessageSystemAttributeNames=["All"])
            for m in resp.get("Messages", []):
                got.append(m)
                await self.call("sqs", "delete_message", QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return got


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


@dataclass
class Call:
    event: Any
    headers: dict[str, str]
    at: float
    request: web.Request | None = field(default=None, repr=False)  # for responders that stream


Responder = Callable[[Any, "Call"], Awaitable[web.StreamResponse] | web.StreamResponse]


@dataclass
class RecordingTarget:
    """An HTTP target that records every request and answers as the test tells it."""

    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    responder: Responder | None = None
    in_flight: int = 0
    peak: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/invoke"

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/invoke", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._arrived = asyncio.Condition()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = Call(json.loads(await request.read()), dict(request.headers), time.monotonic(), request)
        self.calls.append(call)
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.responder is None:
                return web.json_response({})
            result = self.responder(call.event, call)
            if asyncio.iscoroutine(result):
                result = await result
            return result  # type: ignore[return-value]
        finally:
            self.in_flight -= 1

    async def wait_for(self, predicate: Callable[[list[Call]], bool], timeout: float = 20.0) -> list[Call]:
        assert self._arrived is not None
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: predicate(self.calls)), timeout)
        return self.calls

    def records(self) -> list[dict[str, Any]]:
        return [r for c in self.calls for r in c.event["Records"]]

    def bodies(self) -> list[str]:
        return [r["body"] for r in self.records()]


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


async def create_stream(aws: Aws, name: str, shards: int = 1) -> list[str]:
    await aws.call("kinesis", "create_stream", StreamName=name, ShardCount=shards)
    listed = await aws.call("kinesis", "list_shards", StreamName=name)
    return [s["ShardId"] for s in listed["Shards"]]


async def put_records(aws: Aws, stream: str, items: list[tuple[str, bytes]]) -> list[str]:
    """One writer, one record at a time (the emulator can lose records under concurrent writers)."""
    seqs = []
    for key, data in items:
        resp = await aws.call("kinesis", "put_record", StreamName=stream, PartitionKey=key, Data=data)
        seqs.append(resp["SequenceNumber"])
    return seqs


CACHE = Path(__file__).resolve().parent.parent / ".cache"  # npm packages the tests run, installed once
NODE_PACKAGES = {"kinesalite": ("kinesalite@3", "node_modules/kinesalite/cli.js"),
                 "aws-lambda-ric": ("aws-lambda-ric@4", "node_modules/aws-lambda-ric/index.mjs")}


def npm_install(name: str) -> tuple[Path, str | None]:
    """One of ``NODE_PACKAGES`` installed into ``.cache/<name>``: its script, and why it failed (or
    None). Parallel test workers take turns (a file lock), so one installs and the others find it;
    an install is complete only once its marker is written, so one cut short is done again."""
    package, script = NODE_PACKAGES[name]
    prefix = CACHE / name
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = prefix / ".installed"
        if done.exists():
            return prefix / script, None
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), package],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _installing.add(proc)
        try:
            _, stderr = proc.communicate(timeout=900)
        finally:
            _installing.discard(proc)
        if proc.returncode != 0 or not (prefix / script).exists():
            return prefix / script, f"{package} did not install: {stderr.strip().splitlines()[-1:]}"
        done.write_text(package)
        return prefix / script, None


_installing: set[subprocess.Popen[str]] = set()


@atexit.register
def _stop_installs() -> None:
    """A run that ends first stops its installs (unmarked: the next run does them again)."""
    for proc in list(_installing):
        proc.kill()


def prepare_node_packages() -> None:
    """Install every npm package the tests run, side by side, ahead of the tests that need them."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        return
    def install(name: str) -> None:
        with contextlib.suppress(Exception):  # the test that needs it installs it again and says why it failed
            npm_install(name)

    threads = [threading.Thread(target=install, args=(name,), daemon=True) for name in NODE_PACKAGES]
    for thread in threads:
        thread.start()


class Kinesalite:
    """kinesalite (npm) under the machine's node: faithful on shard ends and resharding, where the
    AWS emulator is not. Installed on first use into .cache/kinesalite."""

    def __init__(self) -> None:
        self.root = CACHE / "kinesalite"
        self.port = free_port()
        # One clock per server (parallel test workers each start one), and how often it has moved on
        self._clock = CACHE / f"kinesalite-clock-{self.port}.js"
        self._jumps = CACHE / f"kinesalite-clock-{self.port}.jumps"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def missing() -> str | None:
        """Why kinesalite cannot run here, or None."""
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                return f"{tool} is not on PATH: the kinesalite tests need Node.js (apt-get install nodejs npm)"
        return None

    def start(self) -> None:
        script, why = npm_install("kinesalite")
        if why:
            raise RuntimeError(why)
        # kinesalite reads Date.now(); SIGUSR2 moves it 301 s on and writes how many times it has
        clock = self._clock
        self._jumps.write_text("0")
        clock.write_text("const fs = require('fs'); const real = Date.now; let jumps = 0;\n"
                         "Date.now = () => real() + jumps * 301000;\n"
                         "process.on('SIGUSR2', () => { jumps += 1;"
                         " fs.writeFileSync(process.env.KINESALITE_JUMPS, String(jumps)); });\n")
        self._proc = subprocess.Popen(
            ["node", "--require", str(clock), str(script), "--port", str(self.port), "--createStreamMs", "10",
             "--updateStreamMs", "10", "--deleteStreamMs", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "KINESALITE_JUMPS": str(self._jumps)})
        wait_for_port(self.port, self._proc, "kinesalite", timeout=30)

    def expire_iterators(self) -> None:
        """Move kinesalite's clock past its 5-minute iterator lifetime: every iterator handed out so
        far now gets ExpiredIteratorException from kinesalite's own check."""
        assert self._proc is not None
        expected = str(int(self._jumps.read_text()) + 1)
        self._proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while self._jumps.read_text() != expected:  # the signal is handled between node's events
            assert time.monotonic() < deadline, "kinesalite never moved its clock"
            time.sleep(0.01)

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        for path in (self._clock, self._jumps):
            path.unlink(missing_ok=True)


async def wait_active(aws: Aws, stream: str) -> None:
    for _ in range(200):
        summary = await aws.call("kinesis", "describe_stream_summary", StreamName=stream)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream} never became ACTIVE")


class TcpProxy:
    """A loopback TCP proxy whose upstream can be taken away: ``cut()`` closes the listener and
    every open connection (clients see connection refused/reset), ``restore()`` listens again on
    the same port. Stands for an AWS endpoint that becomes unreachable."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class BrokerProcess:
    """``python -m broker run`` in its own process, its log in a file the test can read."""

    def __init__(self, config: dict[str, Any], tmp: Path, name: str = "broker") -> None:
        self.tmp = tmp
        self.name = name
        self.port = free_port()
        config["broker"]["api"] = {"host": "127.0.0.1", "port": self.port}
        self.config = config
        self.log_path = tmp / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        path = self.tmp / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(path)],
                                      stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        log.close()
        if wait:
            wait_for_port(self.port, self._proc, self.name, timeout=60)

    @property
    def returncode(self) -> int | None:
        assert self._proc is not None
        return self._proc.poll()

    def signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    def stop(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return self._proc.returncode if self._proc else None
        self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def ready(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: (status, body); (0, {}) if the API does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}
