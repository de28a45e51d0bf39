"""`EnhancedHybridAIClient`: the gateway engine as a Python API.

In-process callers (jobs, scripts, the checklist's drills) use it instead of
HTTP; the `/v1/chat/completions` shell in `routing.gateway` uses it too, so
both paths share one engine. Async methods run on the caller's event loop;
the sync ones run on one private background loop, so that connection pools
stay warm between calls.

    client = EnhancedHybridAIClient()
    answer = client.complete(model="summary", messages=[{"role": "user", "content": "..."}])
    for chunk in client.stream(model="summary", messages=[...]):
        ...
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import orjson
from django.conf import settings

from project.errors import ApiError
from project.loops import PerLoop
from project.redis import close_async_client, close_gateway_client, gateway_client
from routing.breaker import Policy
from routing.engine import Answer, Caller, Engine, EngineSettings, StreamAnswer
from routing.http import close_upstream_client, upstream_client
from routing.schema import ChatRequest, validate_chat_body
from routing.table import KeyInfo, TableCache


def _make_engine() -> Engine:
    return Engine(
        redis=gateway_client(),
        http=upstream_client(),
        tables=TableCache(settings.SWITCHBOARD["TABLE_CHECK_SECONDS"]),
        settings=EngineSettings.from_settings(),
        policy=Policy.from_settings(),
    )


_engines = PerLoop(_make_engine)


def current_engine() -> Engine:
    """The engine of the running event loop (Redis and HTTP pools are loop-bound)."""
    return _engines.get()


async def close_engine() -> None:
    """Close the running loop's engine and its pools (server shutdown, end of asyncio.run)."""
    engine = _engines.pop()
    if engine is not None:
        await engine.allowances.close()
    await close_upstream_client()
    await close_gateway_client()
    await close_async_client()


def forget_cached_state() -> None:
    """Make every engine of this process re-read its routing table, breaker states and
    live numbers."""
    for engine in _engines.values():
        engine.tables.invalidate()
        engine.breakers.forget()
        engine.limits.forget()
        engine.readings.forget()
        engine.stamps.clear()


def drop_allowances() -> None:
    """Make every engine of this process drop its allowances without handing them back:
    Redis was emptied (the test suite's fixture)."""
    for engine in _engines.values():
        engine.allowances.forget()


class EnhancedHybridAIClient:
    """Chat completions through Switchboard's routing, fallback, breakers and ledger.

    ``key`` is an optional client key: with it, calls are authenticated,
    scope-checked and attributed to that key in the ledger, as over HTTP.
    """

    def __init__(self, key: str | None = None, environment: str = "prod") -> None:
        """``key``: a client key to act as; without one, calls use ``environment``'s credentials."""
        self._raw_key = key
        self._environment = environment

    # -- async API ---------------------------------------------------------------

    async def acomplete(self, **body: Any) -> dict[str, Any]:
        answer = await self.run(validate_chat_body({**body, "stream": False}))
        return dict(orjson.loads(answer.completion.body))

    async def astream(self, **body: Any) -> AsyncGenerator[dict[str, Any]]:
        answer = await self.open_stream(validate_chat_body({**body, "stream": True}))
        try:
            async for frame in answer.chunks():
                payload = frame.removeprefix(b"data: ").strip()
                if payload == b"[DONE]":
                    return
                chunk = orjson.loads(payload)
                if "error" in chunk:
                    error = chunk["error"]
                    raise ApiError(502, error["message"], error.get("code") or "stream_cut")
                yield chunk
        finally:
            await answer.aclose()

    async def run(
        self,
        request: ChatRequest,
        caller: Caller | None = None,
        deliver: Callable[[Answer], Awaitable[None]] | None = None,
    ) -> Answer:
        """The engine's answer to ``request``; ``deliver`` hands it on first (`Engine.complete`)."""
        engine = current_engine()
        return await engine.complete(request, caller or await self._caller(), deliver)

    async def open_stream(self, request: ChatRequest, caller: Caller | None = None) -> StreamAnswer:
        engine = current_engine()
        return await engine.open_stream(request, caller or await self._caller())

    async def authenticate(self, raw_key: str | None, scope: str = "chat") -> KeyInfo:
        """The key's identity, or an ApiError (401 unknown or revoked, 403 missing scope)."""
        if not raw_key:
            raise ApiError(
                401,
                "Missing API key: send 'Authorization: Bearer <client key>'.",
                "missing_api_key",
            )
        table = await current_engine().table()
        key = table.keys.get(hashlib.sha256(raw_key.encode()).hexdigest())
        if key is None:
            raise ApiError(401, "Invalid API key, or the key was revoked.", "invalid_api_key")
        if key.expires_at is not None and time.time() >= key.expires_at:
            raise ApiError(401, "This API key has expired; use its successor.", "expired_api_key")
        if scope not in key.scopes:
            raise ApiError(403, f"This key lacks the '{scope}' scope.", "insufficient_scope")
        return key

    async def _caller(self) -> Caller:
        if self._raw_key is None:
            return Caller(keyless_environment=self._environment)
        return Caller(key=await self.authenticate(self._raw_key))

    # -- sync API ----------------------------------------------------------------

    def complete(self, **body: Any) -> dict[str, Any]:
        return _portal().call(self.acomplete(**body))

    def stream(self, **body: Any) -> Iterator[dict[str, Any]]:
        portal = _portal()
        chunks = self.astream(**body)
        try:
            while True:
                try:
                    yield portal.call(_next(chunks))
                except StopAsyncIteration:
                    return
        finally:
            portal.call(chunks.aclose())


async def _next[T](chunks: AsyncIterator[T]) -> T:
    return await anext(chunks)


class _Portal:
    """A daemon thread running one event loop for the sync API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self.loop.run_forever, name="switchboard-client", daemon=True
        )
        thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        if self.loop.is_running():
            self.call(close_engine())
            self.loop.call_soon_threadsafe(self.loop.stop)

    def call[R](self, coroutine: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


_portal_lock = threading.Lock()
_portal_instance: list[_Portal] = []


def _portal() -> _Portal:
    with _portal_lock:
        if not _portal_instance:
            _portal_instance.append(_Portal())
        return _portal_instance[0]
