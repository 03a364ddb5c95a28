"""The lean GetRecords transport against real sockets on loopback: keep-alive reuse, a connection
the server closed while idle, answers cut short, silent servers, chunked answers, and connections
that stay bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broker.aws.clients import AwsClients, call
from broker.aws.lean import RAW
from broker.aws.lean_http import HttpPool
from broker.errors import AwsThrottled

OK = b'{"Records":[],"NextShardIterator":"next","MillisBehindLatest":0}'
Handler = Callable[[int, int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def _answer(body: bytes, *, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


class RawServer:
    """An HTTP/1.1 server on loopback whose answer to the n-th request on the c-th connection is
    written by ``handler`` (which returns False to close the connection)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.connections += 1
        conn, n = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                n += 1
                if not await self.handler(conn, n, reader, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def _pool(port: int, *, read_timeout: float = 5.0, limit: int = 10) -> HttpPool:
    return HttpPool(f"http://127.0.0.1:{port}", limit=limit, connect_timeout=2, read_timeout=read_timeout,
                    ca_bundle=None, monotonic=time.monotonic)


@pytest.fixture
async def lean_of() -> AsyncIterator[Callable[[int], Awaitable[object]]]:
    clients: list[AwsClients] = []

    async def make(port: int) -> object:
        aws = AwsClients(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")
        clients.append(aws)
        return await aws.lean("kinesis", "GetRecords")

    yield make
    for aws in clients:
        await aws.aclose()


async def test_keep_alive_reuses_one_connection() -> None:
    async def ok(_c: int, _n: int, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(_answer(OK))
        return True

    async with RawServer(ok) as server:
        pool = _pool(server.port)
        for _ in range(20):
            assert await pool.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}") == (200, OK)
        await pool.aclose()
    assert server.connections == 1
    assert len(server.requests) == 20


async def test_a_connection_closed_while_idle_is_replaced_without_an_error(
        lean_of: Callable[[int], Awaitable[object]]) -> None:
    # The server answers the first request, then drops the connection when the next one arrives
    # (the race of a keep-alive timeout): the call still succeeds, on a second connection.
    async def first_then_drop(c: int, n: int, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if c == 1 and n == 2:
            return False
        w.write(_answer(OK))
        return True

    async with RawServer(first_then_drop) as server:
        lean = await lean_of(server.port)
        for _ in range(3):
            page = (await call(lean, attempts=1, ShardIterator="it", Limit=1))[RAW]  # type: ignore[arg-type]
            assert page["NextShardIterator"] == "next"
    assert server.connections == 2
    assert len(server.requests) == 4  # the dropped one was sent again


async def test_answer_cut_short_is_retryable(lean_of: Callable[[int], Awaitable[object]]) -> None:
    async def cut(_c: int, _n: int, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(_answer(OK)[:-10])
        await w.drain()
        return False

    async with RawServer(cut) as server:
        lean = await lean_of(server.port)
        with pytest.raises(AwsThrottled) as info:
            await call(lean, attempts=1, ShardIterator="it", Limit=1)  # type: ignore[arg-type]
        assert info.value.retryable
        assert "middle of the answer" in str(info.value)
        assert server.connections == 1  # not sent twice: part of an answer had come


async def test_silent_server_times_out() -> None:
    async def silent(_c: int, _n: int, r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> bool:
        await r.read()  # until the client gives up
        return False

    async with RawServer(silent) as server:
        pool = _pool(server.port, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert 0.25 < time.monotonic() - started < 2
        await pool.aclose()


async def test_chunked_answer_and_a_malformed_one() -> None:
    async def chunked(_c: int, n: int, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            half = len(OK) // 2
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + f"{half:x}\r\n".encode() + OK[:half] + b"\r\n"
                    + f"{len(OK) - half:x}\r\n".encode() + OK[half:] + b"\r\n0\r\n\r\n")
            return True
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
        return True

    async with RawServer(chunked) as server:
        pool = _pool(server.port)
        assert await pool.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") == (200, OK)
        with pytest.raises(ConnectionError, match="malformed"):
            await pool.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await pool.aclose()


async def test_concurrent_requests_stay_within_the_limit() -> None:
    async def slow(_c: int, _n: int, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        w.write(_answer(OK))
        return True

    async with RawServer(slow) as server:
        pool = _pool(server.port, limit=4)
        answers = await asyncio.gather(*(pool.request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") for _ in range(40)))
        await pool.aclose()
    assert answers == [(200, OK)] * 40
    assert server.connections == 4


async def test_a_cancelled_request_does_not_leave_its_connection_out_of_step() -> None:
    async def slow_first(c: int, _n: int, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if c == 1:
            await asyncio.sleep(0.3)
        w.write(_answer(OK if c > 1 else b'{"late":true}'))
        return True

    async with RawServer(slow_first) as server:
        pool = _pool(server.port)
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await pool.request(request)
        assert await pool.request(request) == (200, OK)  # never the late answer to the cancelled one
        await pool.aclose()
    assert server.connections == 2
