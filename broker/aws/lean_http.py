"""Keep-alive HTTP/1.1 connections to one origin, for the lean AWS call (``aws/lean.py``).

An idle stream shard costs one GetRecords a second, and a broker holds thousands of them: aiohttp's
client spent ~150 µs of Python per request on features this call never uses (cookies, redirects,
proxies, traces, multipart, per-request timers and header merging), more than the whole budget of
an idle poll. Here a request is written in one transport write onto a pooled asyncio connection
and the answer is parsed by httptools (llhttp, the parser behind uvicorn, by uvloop's authors).
TLS is Python's ssl with botocore's CA bundle (or ``AWS_CA_BUNDLE``).

Failures are the exceptions ``aws.translate`` already classifies as retryable: ``ConnectionError``
(refused, reset, closed mid-answer, a malformed answer) and ``TimeoutError``. A keep-alive
connection the server closed while it sat idle is detected when a request on it gets no byte of
answer, and the request is sent once more on a new connection (GetRecords only reads).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # GetRecords answers at most 10 MB of data (~14 MB as JSON)


class _Stale(ConnectionError):
    """The connection closed before any byte of the answer: the request may be sent again."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()  # once: each call is a getpid() system call
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._received = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._received:
            self._fail(ConnectionResetError(f"connection closed in the middle of the answer ({exc or 'EOF'})"))
        else:
            self._fail(_Stale(f"connection closed before the answer ({exc or 'EOF'})"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(ConnectionError(f"answer over {MAX_RESPONSE_BYTES} bytes"))
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body = b"".join(self._chunks)
        self._chunks, self._size = [], 0
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body, self._parser.should_keep_alive()))
        else:  # an answer nobody asked for: the connection is out of step
            self.close()

    async def exchange(self, data: bytes, limit_seconds: float) -> tuple[int, bytes, bool]:
        assert self.transport is not None
        assert self._waiter is None
        waiter: asyncio.Future[tuple[int, bytes, bool]] = self._loop.create_future()
        self._waiter = waiter
        self._received = False
        self.transport.write(data)
        timer = self._loop.call_later(limit_seconds, self._time_out, limit_seconds)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _time_out(self, limit_seconds: float) -> None:
        self._fail(TimeoutError(f"no answer within {limit_seconds:g} s"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Up to ``limit`` keep-alive connections to the origin of ``url``; the most recently used is
    reused first (the fewest sockets stay busy: reusing them in turn cost ~10% more CPU with 1,000
    idle shards), and connections idle longer than ``idle_seconds`` are closed."""

    def __init__(self, url: str, *, limit: int, connect_timeout: float, read_timeout: float,
                 ca_bundle: str | None, monotonic: Callable[[], float], idle_seconds: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._tls = parts.scheme == "https"
        self._hostname = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        # The Host header as botocore signs it: the port only when it is not the scheme's default.
        default = 443 if self._tls else 80
        self.host = self._hostname if self._port == default else f"{self._hostname}:{self._port}"
        if ":" in self._hostname:  # IPv6 literal
            self.host = f"[{self._hostname}]" + ("" if self._port == default else f":{self._port}")
        self._ssl = ssl.create_default_context(cafile=ca_bundle) if self._tls else None
        self._limit = limit
        self._busy = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: list[_Connection] = []  # the most recently used last
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle_seconds = idle_seconds
        self._monotonic = monotonic
        self._closed = False

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one whole request (head and body); the answer's status and body."""
        if self._busy >= self._limit or self._waiting:
            await self._turn()  # a finishing request hands its place over
        else:
            self._busy += 1
        try:
            for attempt in range(2):
                conn = self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                try:
                    status, body, keep_alive = await conn.exchange(data, self._read_timeout)
                except _Stale:
                    if reused and attempt == 0:
                        continue  # the server had closed it while idle: once more on a new one
                    raise
                except BaseException:  # a timeout or a cancellation leaves the connection out of step
                    conn.close()
                    raise
                if keep_alive and not conn.closed and not self._closed:
                    conn.idle_since = self._monotonic()
                    self._idle.append(conn)
                else:
                    conn.close()
                return status, body
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._leave()

    def _leave(self) -> None:
        """Hand this request's place to the longest-waiting one, or free it."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1

    async def _turn(self) -> None:
        """Wait in line for a place among ``limit`` requests in flight (a counter and a queue, not
        asyncio.Semaphore: this is on every poll of every shard)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a place it cannot use: pass it on
                self._leave()
            raise

    def _take_idle(self) -> _Connection | None:
        now = self._monotonic()
        while self._idle and now - self._idle[0].idle_since > self._idle_seconds:
            self._idle.pop(0).close()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, self._hostname, self._port, ssl=self._ssl,
                    server_hostname=self._hostname if self._tls else None)
        except TimeoutError as exc:
            raise TimeoutError(f"connecting to {self.host} took over {self._connect_timeout:g} s") from exc
        except OSError as exc:  # refused, unreachable, a name that does not resolve, a TLS failure
            raise ConnectionError(f"cannot connect to {self.host}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for conn in self._idle:
            with contextlib.suppress(Exception):
                conn.close()
        self._idle.clear()
