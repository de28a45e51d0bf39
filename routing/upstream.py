"""A lean HTTP/1.1 client for provider calls: httptools' parser under an asyncio Protocol.

The gateway makes one kind of call: a POST of a JSON body to a provider's origin,
answered by a JSON body or an SSE stream. aiohttp's client does that in about a sixth
of a gateway process's CPU (request and response objects, a stream reader, a timer
per read, multidict headers; bench/RESULTS.md). This client does only that: it writes
the request in one `write`, feeds what arrives to httptools' C parser (the one uvicorn
uses), and hands the body over as it comes. Connections are kept alive and reused per
origin (scheme, host, port), LIFO, up to ``limit`` open per origin, and closed after
``IDLE_SECONDS`` unused; TLS verifies the provider's certificate and host name.

Timeouts are the provider's: ``connect`` for opening a connection (TLS included), and
``read`` for each wait on the provider (the head, each piece of the body), so a slow
stream is not cut for being long, only for going quiet. Failures raise `TimeoutError`,
`ConnectFailed` or `Disconnected`; `routing.http` turns them into the engine's errors.
A connection is reused only after a whole response that allows keep-alive; one that
fails, or whose body the caller did not read to the end, is closed.

Response headers arrive as a dict with lower-case names (repeated ones joined by
", "). Requests carry no cookies, no ``Accept-Encoding`` (answers come uncompressed)
and follow no redirects.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httptools

USER_AGENT = b"switchboard"
# A kept-alive connection idle longer than this is closed rather than reused: providers
# and their load balancers drop idle connections (often after 30-60 s), and a call sent
# on one they dropped fails, costing a retry and a breaker failure. aiohttp uses 15 s.
IDLE_SECONDS = 15.0


class ConnectFailed(OSError):
    """The connection (or its TLS handshake) could not be opened."""


class Disconnected(ConnectionError):
    """The provider closed the connection, or it broke, before the response was whole."""


@functools.lru_cache(maxsize=256)
def _origin(url: str) -> tuple[tuple[str, str, int], bytes, bytes]:
    """((scheme, host, port), request target, Host header value) of ``url``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literal
    if port != default:
        host = f"{host}:{port}"
    return (parts.scheme, parts.hostname, port), target.encode(), host.encode("idna")


class Response:
    """A response as it arrives: status and headers first, then the body in pieces."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}
        self.pieces: deque[bytes] = deque()
        self.complete = False
        self.error: BaseException | None = None

    async def read(self) -> bytes:
        """The whole body (what is left of it)."""
        body = []
        async for piece in self.iter_chunks():
            body.append(piece)
        return b"".join(body)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (chunked framing already removed)."""
        connection = self._connection
        while True:
            while self.pieces:
                yield self.pieces.popleft()
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            await connection.wait(connection.read_timeout)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout = 60.0
        self.headers_done = False
        self.reusable = True
        self.idle_since = 0.0  # monotonic time it went back to the pool

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing asked: a provider talking out of turn
            self.reusable = False
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(Disconnected(f"the provider's response could not be parsed ({exc})"))
            self.close()
            return
        self._wake()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.reusable = False
        response = self.response
        if (
            exc is None
            and response is not None
            and self.headers_done
            and response.error is None
            and "content-length" not in response.headers
            and "chunked" not in response.headers.get("transfer-encoding", "").lower()
        ):
            response.complete = True  # a body without framing ends when the provider closes
            self._wake()
        self._fail(Disconnected("the provider closed the connection"))
        self.pool.forget(self)

    # -- httptools callbacks ---------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.response.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        assert self.response is not None
        status = self.parser.get_status_code()
        if status < 200:  # an interim response (100 Continue, 103 Early Hints): the final follows
            self.response.headers.clear()
            return
        self.response.status = status
        self.headers_done = True
        if not self.parser.should_keep_alive():
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.pieces.append(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        if self.headers_done:  # not the end of an interim response
            self.response.complete = True

    # -- the request's side ------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        response = self.response
        if response is not None and not response.complete and response.error is None:
            response.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until something arrives (or the connection fails), at most ``seconds``."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(seconds, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self.reusable = False
            waiter.set_exception(TimeoutError("the provider did not answer in time"))
            self.close()

    def start(self, head: bytes, body: bytes, read_timeout: float) -> Response:
        self.response = Response(self)
        self.headers_done = False
        self.read_timeout = read_timeout
        assert self.transport is not None
        self.transport.write(head + body)
        return self.response

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """The connections to one origin: idle ones for reuse, a cap on how many are open."""

    def __init__(self, origin: tuple[str, str, int], limit: int, tls: ssl.SSLContext | None):
        self.origin = origin
        self.limit = limit
        self.tls = tls
        self.idle: list[_Connection] = []
        self.open = 0
        self.queue: deque[asyncio.Future[None]] = deque()

    def _take_idle(self) -> _Connection | None:
        """The most recently used live connection, if one has been idle less than
        ``IDLE_SECONDS`` (older ones are closed: the provider may have dropped them)."""
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()
            if connection.transport is None or connection.transport.is_closing():
                continue
            if now - connection.idle_since > IDLE_SECONDS:
                connection.close()
                continue
            return connection
        return None

    async def acquire(self, connect_timeout: float) -> _Connection:
        connection = self._take_idle()
        if connection is not None:
            return connection
        while self.open >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.queue.append(waiter)
            try:
                async with asyncio.timeout(connect_timeout):
                    await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._next()  # woken, but gone before its turn: wake the next one instead
                raise
            connection = self._take_idle()
            if connection is not None:
                return connection
        self.open += 1
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            self.open -= 1
            self._next()
            raise

    async def _connect(self, seconds: float) -> _Connection:
        _, host, port = self.origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    host,
                    port,
                    ssl=self.tls,
                    server_hostname=host if self.tls is not None else None,
                )
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(
                f"could not connect to the provider ({type(exc).__name__})"
            ) from None
        return connection

    def release(self, connection: _Connection) -> None:
        response = connection.response
        connection.response = None
        if (
            connection.reusable
            and response is not None
            and response.complete
            and connection.transport is not None
            and not connection.transport.is_closing()
        ):
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
            # The least recently used ones, if they have idled too long, go now.
            while len(self.idle) > 1 and (
                connection.idle_since - self.idle[0].idle_since > IDLE_SECONDS
            ):
                self.idle.pop(0).close()
            self._next()
        else:
            connection.close()  # connection_lost forgets it

    def forget(self, connection: _Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        self.open -= 1
        self._next()

    def _next(self) -> None:
        while self.queue:
            waiter = self.queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class Client:
    """Keep-alive connections to every origin the gateway calls (one client per event loop)."""

    def __init__(self, limit_per_origin: int = 512) -> None:
        self.limit = limit_per_origin
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls = ssl.create_default_context()

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        connect_timeout: float,
        read_timeout: float,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[_Connection, Response]:
        """Send the request and wait for the response's head. The caller reads the body
        and then hands the connection back with `done` (in a finally). ``meanwhile`` runs
        once the request is written, before the wait; it must not raise."""
        origin, target, host = _origin(url)
        pool = self._pools.get(origin)
        if pool is None:
            tls = self._tls if origin[0] == "https" else None
            pool = self._pools[origin] = _Pool(origin, self.limit, tls)
        # The head is made before a connection is taken: a header that cannot be sent
        # (not latin-1, or a CR/LF that would start a header or request of its own)
        # fails here, with no connection to give back. The message names no value.
        lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), target, host)]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"a line break in the request header {name!r}")
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if not any(name.lower() == "user-agent" for name in headers):
            lines.append(b"User-Agent: %s\r\n" % USER_AGENT)
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        connection = await pool.acquire(connect_timeout)
        try:
            response = connection.start(b"".join(lines), body, read_timeout)
            if meanwhile is not None:
                meanwhile()
            while not connection.headers_done:
                if response.error is not None:
                    raise response.error
                await connection.wait(read_timeout)
        except BaseException:
            connection.reusable = False
            pool.release(connection)
            raise
        return connection, response

    def done(self, connection: _Connection) -> None:
        """Hand the connection back: reused if its response was read whole, else closed."""
        connection.pool.release(connection)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()
        self._pools.clear()
