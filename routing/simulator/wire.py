"""ASGI plumbing and the contract every simulated provider implements."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from routing.simulator.engine import Conversation, Reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")
SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")
NO_CACHE = (b"cache-control", b"no-cache")


class Failure(Exception):
    """A complete native error response, raised to cut a request short."""

    def __init__(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    # Gemini carries the model in the URL rather than the body.
    path_model: str | None = None
    stream_path: bool = False
    sse: bool = False


@dataclass(slots=True)
class StreamPlan:
    """A stream split where fault injection needs to cut it."""

    head: list[bytes]
    content: list[bytes]
    tail: list[bytes]
    headers: Headers = field(default_factory=list)
    content_type: tuple[bytes, bytes] = SSE_TYPE


class Provider:
    """One simulated upstream. Subclasses speak one wire protocol."""

    name: str = ""
    json_type: tuple[bytes, bytes] = JSON_TYPE

    def model_of(self, request: Request, payload: Any) -> str:
        model = payload.get("model") if isinstance(payload, dict) else None
        return model if isinstance(model, str) else ""

    def is_stream(self, request: Request, payload: Any) -> bool:
        return isinstance(payload, dict) and payload.get("stream") is True

    def authenticate(self, request: Request) -> None:
        raise NotImplementedError

    def parse(self, request: Request, payload: Any) -> Conversation:
        raise NotImplementedError

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> Failure:
        """The provider's native error for an HTTP status (used by the error fault)."""
        raise NotImplementedError

    def rate_limited(self, model: str, retry_after: float) -> Failure:
        return self.error(429, retry_after=retry_after)

    def out_of_credit(self) -> Failure:
        raise NotImplementedError

    def model_not_found(self, model: str) -> Failure:
        raise NotImplementedError

    def context_exceeded(self, model: str, prompt: int, window: int) -> Failure:
        raise NotImplementedError

    def transport_headers(self, request: Request) -> Headers:
        """Headers a real provider attaches even when it drops or garbles the body."""
        return []

    def respond(
        self, request: Request, conversation: Conversation, reply: Reply
    ) -> tuple[bytes, Headers]:
        raise NotImplementedError

    def stream(self, request: Request, conversation: Conversation, reply: Reply) -> StreamPlan:
        raise NotImplementedError

    def nearly_spent(self, headers: Headers, reset_seconds: float) -> Headers:
        """The quota_low fault: the same answer, its rate-limit headers saying one request
        is left until ``reset_seconds`` from now. Protocols without such headers ignore it."""
        return headers

    def malformed_event(self, request: Request) -> bytes:
        return b"data: {this is not json\n\n"


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: Headers,
    content_type: tuple[bytes, bytes] = JSON_TYPE,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [content_type, (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, value: Any, headers: Headers | None = None) -> None:
    await send_bytes(send, status, orjson.dumps(value), headers or [])


async def send_events(
    send: Send,
    events: list[bytes],
    headers: Headers,
    content_type: tuple[bytes, bytes] = SSE_TYPE,
    *,
    complete: bool = True,
) -> None:
    """Send a whole event stream; with complete=False the caller then drops the line.

    The events go out in one write: with nothing to wait for between them, one
    syscall instead of one per event doubles stream throughput, and SSE clients
    must cope with any framing of the bytes anyway.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [content_type, NO_CACHE, *headers],
        }
    )
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": not complete})


async def send_events_slowly(send: Send, receive: Receive, plan: Any, interval: float) -> None:
    """The head at once, then a content event every ``interval``; stops if the client left."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [plan.content_type, NO_CACHE, *plan.headers],
        }
    )
    await send({"type": "http.response.body", "body": b"".join(plan.head), "more_body": True})
    for event in plan.content:
        if await pause(receive, interval):
            return
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"".join(plan.tail), "more_body": False})


async def start_then_drop(send: Send, headers: Headers) -> None:
    """Begin a chunked 200 and return without finishing it.

    ASGI cannot close a socket before a response starts (uvicorn answers 500
    instead), so the closest thing to a reset is a response head with a body
    that never completes; uvicorn then closes the transport and the client
    sees an incomplete message, i.e. a transport error.
    """
    await send({"type": "http.response.start", "status": 200, "headers": [JSON_TYPE, *headers]})
    await send({"type": "http.response.body", "body": b"", "more_body": True})


async def pause(receive: Receive, seconds: float) -> bool:
    """Sleep without holding the server; True if the client hung up meanwhile.

    Watching for the disconnect lets a long "timeout" fault end as soon as the
    client gives up, so the server can shut down without waiting a minute.
    """
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(_until_disconnect(receive), seconds)
    except TimeoutError:
        return False
    return True


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
