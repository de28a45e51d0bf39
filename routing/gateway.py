"""The HTTP shell of the gateway: `/v1/chat/completions` and `/v1/models`.

A plain ASGI app, mounted by `project.asgi` in front of Django (see there why).
It parses, authenticates and renders; all decisions are the engine's, reached
through `EnhancedHybridAIClient`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from project.errors import ApiError
from project.logs import bind_request_id
from routing import context
from routing.client import EnhancedHybridAIClient, close_engine, current_engine
from routing.engine import Answer, Caller
from routing.schema import (
    CONTEXT_HEADER_PREFIX,
    ChatRequest,
    add_context_headers,
    parse_chat_request,
)
from routing.table import KeyInfo

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 8 * 1024 * 1024
JSON = (b"content-type", b"application/json")
SSE = (b"content-type", b"text/event-stream")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    method: str
    scope: str  # the client key scope it needs, one of routing.models.Scope


# Every path the gateway answers, with the scope dispatch() checks before
# anything else; tests/routing/test_scopes.py fails for one without a test row.
ENDPOINTS = {
    "/v1/chat/completions": Endpoint("POST", "chat"),
    "/v1/models": Endpoint("GET", "chat"),
}


class GatewayApp:
    def __init__(self) -> None:
        self.client = EnhancedHybridAIClient()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.dispatch(scope, receive, tracked_send)
        except ApiError as error:
            await send_json(send, error.status, error.body(), error.headers())
        except Exception:
            log.exception("unexpected error on %s", scope["path"])
            if started:
                raise  # too late for an error body; the server closes the connection
            internal = ApiError(500, "Switchboard failed unexpectedly; it was logged.", "internal")
            await send_json(send, 500, internal.body())

    async def dispatch(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            raise ApiError(404, f"Unknown path {path}.", "not_found")
        if method != endpoint.method:
            raise ApiError(405, f"Use {endpoint.method} for {path}.", "method_not_allowed")
        key = await self.client.authenticate(bearer(scope), endpoint.scope)
        if path == "/v1/chat/completions":
            await self.chat(key, scope, receive, send)
        else:
            await self.models(key, send)

    async def chat(self, key: KeyInfo, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        request = parse_chat_request(await read_body(receive))
        add_context_headers(request, context_headers(scope))
        caller = Caller(key=key)
        bind_request_id(caller.request_id)  # on every log line of this request (project/logs.py)
        try:
            await self._answer(request, caller, receive, send)
        except ApiError as error:
            raise dataclasses.replace(error, request_id=caller.request_id) from None

    async def _answer(
        self, request: ChatRequest, caller: Caller, receive: Receive, send: Send
    ) -> None:
        if not request.stream:
            await self.client.run(request, caller, functools.partial(send_answer, send))
            return
        stream = await self.client.open_stream(request, caller)
        headers = [SSE, (b"cache-control", b"no-cache"), *encode_headers(stream.headers())]
        # uvicorn's send() returns quietly once the client has gone, so watch
        # receive() for the disconnect and stop reading (and paying for) upstream.
        gone = asyncio.create_task(wait_for_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for frame in stream.chunks():
                if gone.done():
                    log.info("client went away during stream %s", caller.request_id)
                    break
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            gone.cancel()
            await stream.aclose()  # records usage and settles budgets even if the client left
        await send({"type": "http.response.body", "body": b""})

    async def models(self, key: KeyInfo, send: Send) -> None:
        table = await current_engine().table()
        now = int(time.time())
        data = [
            {"id": name, "object": "model", "created": now, "owned_by": "switchboard"}
            for name in table.model_ids(key.environment)
            if key.may_use(name)
        ]
        await send_json(send, 200, {"object": "list", "data": data})

    async def lifespan(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The context detectors load (or train) now, not on the first request.
                await asyncio.to_thread(context.warm)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await close_engine()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def send_answer(send: Send, answer: Answer) -> None:
    body = answer.completion.body
    # A Content-Length, not chunked framing: the client reads one plain body.
    length = (b"content-length", b"%d" % len(body))
    headers = [JSON, length, *encode_headers(answer.headers())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


CONTEXT_PREFIX = CONTEXT_HEADER_PREFIX.encode()


def context_headers(scope: dict[str, Any]) -> list[tuple[str, str]]:
    """The request's ``X-Switchboard-*`` headers (the others are not even decoded)."""
    return [
        (name.decode("latin-1"), value.decode("utf-8", "replace"))
        for name, value in scope["headers"]
        if name.startswith(CONTEXT_PREFIX)
    ]


async def read_body(receive: Receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "The request body is larger than 8 MiB.", "request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers.items()]


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON, *encode_headers(headers or {})],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})
