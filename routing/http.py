"""The one module that talks HTTP to providers.

It owns the pooled clients (one per event loop), sets per-phase timeouts, and
turns every transport failure into a TRANSIENT `ProviderError`, so that the
engine only ever sees our own errors. Nothing else imports httpx.

Interchangeable transports, chosen by ``SWITCHBOARD["UPSTREAM_TRANSPORT"]``:
``httptools`` (the project's own lean HTTP/1.1 client, `routing.upstream`),
``aiohttp`` (aiohttp's ClientSession used directly, no cookie jar), and three
behind httpx's API: ``httpx`` (httpcore), ``httpx2`` and ``httpx-aiohttp``
(httpx over aiohttp's pool). `bench/RESULTS.md` compares them; the default is
the fastest that passed. ``aiohttp-nopool`` opens a new connection for every
call (no keep-alive): it exists to measure what pooling gains, not to be used.

Every transport keeps connections alive and reuses them per host (up to
``POOL_LIMITS``), and times each phase on its own: connecting (the provider's
``connect_timeout``) and each read (its ``read_timeout``), so a slow stream is
not cut for being long, only for going quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx

from project.loops import PerLoop
from routing.providers.base import FailureKind, ProviderError, UpstreamRequest

TRANSPORTS = ("httptools", "aiohttp", "httpx", "httpx2", "httpx-aiohttp", "aiohttp-nopool")
POOL_LIMITS = {"max_connections": 512, "max_keepalive_connections": 128}


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass
class UpstreamStream:
    status: int
    headers: Mapping[str, str]
    _response: Any

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except Exception as exc:
            raise transport_error(exc) from None

    async def read(self) -> bytes:
        try:
            return bytes(await self._response.aread())
        except Exception as exc:
            raise transport_error(exc) from None


def transport_error(exc: BaseException) -> ProviderError:
    """Name what went wrong on the wire, without any request detail (it may hold a key)."""
    name = type(exc).__name__
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in name:
        return ProviderError(
            FailureKind.TRANSIENT, "the provider did not answer in time", code="timeout"
        )
    if "Connect" in name:
        return ProviderError(
            FailureKind.TRANSIENT, "could not connect to the provider", code="connect"
        )
    return ProviderError(
        FailureKind.TRANSIENT, f"the connection to the provider failed ({name})", code="connection"
    )


def _make_client(transport: str) -> Any:
    if transport == "httpx2":
        import httpx2

        return httpx2.AsyncClient(limits=httpx2.Limits(**POOL_LIMITS), http2=False)
    if transport == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(transport=AiohttpTransport(limits=httpx.Limits(**POOL_LIMITS)))
    if transport == "httpx":
        return httpx.AsyncClient(limits=httpx.Limits(**POOL_LIMITS))
    raise ValueError(f"unknown upstream transport {transport!r}; choose one of {TRANSPORTS}")


# Work the caller does while the provider works on its request (the engine's context
# detection): run once the request is on the wire, before its answer is awaited.
Meanwhile = Callable[[], None] | None


class UpstreamClient:
    """Pooled HTTP to providers. One instance per event loop (pools are loop-bound)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self._client = _make_client(transport)

    def _timeout(self, timeouts: Timeouts) -> Any:
        module = httpx if self.transport != "httpx2" else __import__("httpx2")
        return module.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.connect
        )

    async def post(
        self, request: UpstreamRequest, timeouts: Timeouts, meanwhile: Meanwhile = None
    ) -> UpstreamResponse:
        """Send ``request``; its answer, read whole. ``meanwhile``: work to do while the
        provider works (here, before the request is sent: httpx has no hook between)."""
        if meanwhile is not None:
            meanwhile()
        try:
            response = await self._client.post(
                request.url,
                content=request.body,
                headers=request.headers,
                timeout=self._timeout(timeouts),
            )
        except Exception as exc:
            raise transport_error(exc) from None
        return UpstreamResponse(response.status_code, response.headers, response.content)

    @asynccontextmanager
    async def stream(
        self, request: UpstreamRequest, timeouts: Timeouts, meanwhile: Meanwhile = None
    ) -> AsyncIterator[UpstreamStream]:
        if meanwhile is not None:
            meanwhile()
        try:
            context = self._client.stream(
                "POST",
                request.url,
                content=request.body,
                headers=request.headers,
                timeout=self._timeout(timeouts),
            )
            response = await context.__aenter__()
        except Exception as exc:
            raise transport_error(exc) from None
        try:
            yield UpstreamStream(response.status_code, response.headers, response)
        finally:
            # A cut stream may fail again on close; that failure was already reported.
            with suppress(Exception):
                await context.__aexit__(None, None, None)

    async def get(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> UpstreamResponse:
        try:
            response = await self._client.get(url, headers=headers, timeout=self._timeout(timeouts))
        except Exception as exc:
            raise transport_error(exc) from None
        return UpstreamResponse(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


class _AiohttpBody:
    """What UpstreamStream needs of a response (aiter_raw, aread), over aiohttp."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def aread(self) -> bytes:
        return bytes(await self._response.read())


class AiohttpUpstreamClient(UpstreamClient):
    """aiohttp's ClientSession used directly: no httpx Request/Response/cookie layer per call.

    No cookie jar (DummyCookieJar): a provider's cookies must never be replayed on
    another client's request.
    """

    def __init__(self, pooled: bool = True) -> None:
        # No super().__init__(): there is no httpx client to make.
        import aiohttp

        self.transport = "aiohttp" if pooled else "aiohttp-nopool"
        self._aiohttp = aiohttp
        connector = aiohttp.TCPConnector(
            limit=POOL_LIMITS["max_connections"],
            ttl_dns_cache=300,
            force_close=not pooled,  # a connection per call: only to measure what pooling gains
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        self._timeouts: dict[Timeouts, Any] = {}

    def _timeout(self, timeouts: Timeouts) -> Any:
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            timeout = self._aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.connect,
                sock_connect=timeouts.connect,
                sock_read=timeouts.read,
            )
            self._timeouts[timeouts] = timeout
        return timeout

    async def post(
        self, request: UpstreamRequest, timeouts: Timeouts, meanwhile: Meanwhile = None
    ) -> UpstreamResponse:
        if meanwhile is not None:
            meanwhile()
        try:
            async with self._session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=self._timeout(timeouts),
            ) as response:
                body = await response.read()
        except Exception as exc:
            raise transport_error(exc) from None
        return UpstreamResponse(response.status, response.headers, body)

    @asynccontextmanager
    async def stream(
        self, request: UpstreamRequest, timeouts: Timeouts, meanwhile: Meanwhile = None
    ) -> AsyncIterator[UpstreamStream]:
        if meanwhile is not None:
            meanwhile()
        try:
            response = await self._session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=self._timeout(timeouts),
            )
        except Exception as exc:
            raise transport_error(exc) from None
        try:
            yield UpstreamStream(response.status, response.headers, _AiohttpBody(response))
        finally:
            response.release()  # back to the pool if read to the end, else the connection is closed

    async def get(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> UpstreamResponse:
        try:
            async with self._session.get(
                url, headers=headers, timeout=self._timeout(timeouts)
            ) as response:
                body = await response.read()
        except Exception as exc:
            raise transport_error(exc) from None
        return UpstreamResponse(response.status, response.headers, body)

    async def aclose(self) -> None:
        await self._session.close()


class _LeanBody:
    """What UpstreamStream needs of a response (aiter_raw, aread), over routing.upstream."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._response.iter_chunks()  # type: ignore[no-any-return]

    async def aread(self) -> bytes:
        return bytes(await self._response.read())


class LeanUpstreamClient(UpstreamClient):
    """routing.upstream's client: the default (bench/RESULTS.md has why)."""

    def __init__(self) -> None:
        # No super().__init__(): there is no httpx client to make.
        from routing import upstream

        self.transport = "httptools"
        self._client = upstream.Client(limit_per_origin=POOL_LIMITS["max_connections"])

    async def _call(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        timeouts: Timeouts,
        meanwhile: Meanwhile = None,
    ) -> UpstreamResponse:
        try:
            connection, response = await self._client.request(
                method, url, headers, body, timeouts.connect, timeouts.read, meanwhile
            )
            try:
                content = await response.read()
            finally:
                self._client.done(connection)
        except Exception as exc:
            raise transport_error(exc) from None
        return UpstreamResponse(response.status, response.headers, content)

    async def post(
        self, request: UpstreamRequest, timeouts: Timeouts, meanwhile: Meanwhile = None
    ) -> UpstreamResponse:
        """``meanwhile`` runs once the request is written, while the provider works."""
        return await self._call(
            "POST", request.url, request.headers, request.body, timeouts, meanwhile
        )

    @asynccontextmanager
    async def stream(
        self, request: UpstreamRequest, timeouts: Timeouts, meanwhile: Meanwhile = None
    ) -> AsyncIterator[UpstreamStream]:
        try:
            connection, response = await self._client.request(
                "POST",
                request.url,
                request.headers,
                request.body,
                timeouts.connect,
                timeouts.read,
                meanwhile,
            )
        except Exception as exc:
            raise transport_error(exc) from None
        try:
            yield UpstreamStream(response.status, response.headers, _LeanBody(response))
        finally:
            self._client.done(connection)  # reused if read to the end, else closed

    async def get(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> UpstreamResponse:
        return await self._call("GET", url, headers, b"", timeouts)

    async def aclose(self) -> None:
        await self._client.aclose()


def _make_upstream_client() -> UpstreamClient:
    from django.conf import settings

    transport = settings.SWITCHBOARD["UPSTREAM_TRANSPORT"]
    if transport == "httptools":
        return LeanUpstreamClient()
    if transport in ("aiohttp", "aiohttp-nopool"):
        return AiohttpUpstreamClient(pooled=transport == "aiohttp")
    return UpstreamClient(transport)


_clients = PerLoop(_make_upstream_client)


def upstream_client() -> UpstreamClient:
    """The running event loop's upstream client (its pools are bound to the loop)."""
    return _clients.get()


async def close_upstream_client() -> None:
    client = _clients.pop()
    if client is not None:
        await client.aclose()


def post_json_sync(url: str, payload: Any, timeout: float) -> tuple[int, str]:
    """POST JSON from a worker (alert webhooks); return the status and the start of the body.

    A failure on the wire raises TimeoutError or ConnectionError naming only what
    went wrong: the URL may hold a secret token, so no message or traceback has it.
    """
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0))) as client:
            response = client.post(url, json=payload, headers={"user-agent": "switchboard-alerts"})
            return response.status_code, response.text[:1000]
    except httpx.TimeoutException:
        raise TimeoutError("the webhook did not answer in time") from None
    except Exception as exc:
        raise ConnectionError(f"the webhook request failed ({type(exc).__name__})") from None
