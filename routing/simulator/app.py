"""The simulator's ASGI application: routing, fault injection and the control API.

Raw ASGI on purpose: the simulator is the upstream in benchmarks, so a request
costs one dict lookup for routing, one JSON parse and one JSON dump.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson

from routing.simulator.aimlapi_wire import AimlapiProvider
from routing.simulator.anthropic_wire import AnthropicProvider
from routing.simulator.engine import context_window, generate, poor_reply, prompt_tokens
from routing.simulator.google_wire import GoogleProvider
from routing.simulator.openai_wire import OpenAIProvider
from routing.simulator.state import (
    DEFAULT_SLOW_MS,
    DEFAULT_TIMEOUT_MS,
    POOR_ANSWERS,
    CallLog,
    Fault,
    FaultBook,
)
from routing.simulator.wire import (
    Failure,
    Provider,
    Receive,
    Request,
    Scope,
    Send,
    pause,
    read_body,
    send_bytes,
    send_events,
    send_events_slowly,
    send_json,
    start_then_drop,
)

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

# Truncated mid-object: every JSON parser rejects it, and it is a 200.
MALFORMED_BODY = b'{"id": "simulated-malformed", "choices": [{"index": 0, "message": '
_UNPARSEABLE = object()


class Simulator:
    """Fake AIMLAPI, OpenAI, Anthropic and Gemini endpoints under one ASGI app."""

    def __init__(self, delay_ms: int | None = None) -> None:
        if delay_ms is None:
            delay_ms = int(os.environ.get("SIM_DELAY_MS") or 0)
        self.delay_seconds = delay_ms / 1000
        self.faults = FaultBook()
        self.calls = CallLog()
        aimlapi = AimlapiProvider()
        openai = OpenAIProvider()
        anthropic = AnthropicProvider()
        self.google = GoogleProvider()
        self.providers: dict[str, Provider] = {
            p.name: p for p in (aimlapi, openai, anthropic, self.google)
        }
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/aimlapi/v1/chat/completions"): partial(self._chat, aimlapi),
            # AIMLAPI's own examples also post without the /v1 prefix.
            ("POST", "/aimlapi/chat/completions"): partial(self._chat, aimlapi),
            ("GET", "/aimlapi/v1/models"): partial(self._listing, aimlapi, aimlapi.models()),
            # The catalogue is public: AIMLAPI serves it without a key.
            ("GET", "/aimlapi/models"): partial(self._listing, None, aimlapi.catalogue()),
            ("POST", "/openai/v1/chat/completions"): partial(self._chat, openai),
            ("GET", "/openai/v1/models"): partial(self._listing, openai, openai.models()),
            ("POST", "/anthropic/v1/messages"): partial(self._chat, anthropic),
            ("GET", "/anthropic/v1/models"): partial(self._listing, anthropic, anthropic.models()),
            ("GET", "/google/v1beta/models"): partial(
                self._listing, self.google, self.google.models()
            ),
            ("GET", "/google/v1/models"): partial(self._listing, self.google, self.google.models()),
            ("GET", "/_control/faults"): self._list_faults,
            ("POST", "/_control/faults"): self._add_fault,
            ("DELETE", "/_control/faults"): self._clear_faults,
            ("GET", "/_control/calls"): self._list_calls,
            ("DELETE", "/_control/calls"): self._reset_calls,
            ("GET", "/healthz"): self._health,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        handler = self._routes.get((scope["method"], scope["path"]))
        if handler is not None:
            await handler(scope, receive, send)
        elif scope["path"].startswith("/google/"):
            await self._google(scope, receive, send)
        else:
            await send_json(send, 404, {"error": f"no route for {scope['method']} {scope['path']}"})

    # -- provider routes --------------------------------------------------------

    async def _chat(
        self,
        provider: Provider,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        path_model: str | None = None,
        stream_path: bool = False,
        sse: bool = False,
    ) -> None:
        request = _request(scope, await read_body(receive), path_model, stream_path, sse)
        try:
            payload = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            payload = _UNPARSEABLE
        recorded = request.body.decode("utf-8", "replace") if payload is _UNPARSEABLE else payload
        client = scope.get("client") or ("", 0)
        self.calls.record(provider.name, recorded, request.headers, f"{client[0]}:{client[1]}")
        fault = self.faults.take(provider.name, provider.model_of(request, payload))
        if self.delay_seconds and await pause(receive, self.delay_seconds):
            return
        mode = fault.mode if fault else None

        try:
            if fault is not None and await self._fault_before_answer(
                fault, provider, request, payload, receive, send
            ):
                return
            provider.authenticate(request)
            conversation = provider.parse(request, payload)
            if "missing" in conversation.model:
                raise provider.model_not_found(conversation.model)
            prompt = prompt_tokens(conversation.texts)
            window = context_window(conversation.model)
            if prompt > window:
                raise provider.context_exceeded(conversation.model, prompt, window)
        except Failure as failure:
            await self._send_failure(provider, request, failure, send)
            return

        reply = generate(conversation, prompt)
        if fault is not None and mode in POOR_ANSWERS:
            reply = poor_reply(reply, fault.mode, fault.text)
        if not conversation.stream:
            if mode == "malformed":
                body, headers = MALFORMED_BODY, provider.transport_headers(request)
            else:
                body, headers = provider.respond(request, conversation, reply)
            if mode == "quota_low":
                headers = provider.nearly_spent(headers, _quota_reset(fault))
            await send_bytes(send, 200, body, headers, provider.json_type)
            return

        plan = provider.stream(request, conversation, reply)
        if mode == "quota_low":
            plan.headers = provider.nearly_spent(plan.headers, _quota_reset(fault))
        if mode == "stream_cut":
            events = [*plan.head, *plan.content[:2]]
            await send_events(send, events, plan.headers, plan.content_type, complete=False)
            return
        if mode == "slow_stream":
            # One content event every delay_ms, like a model generating token by token.
            assert fault is not None
            delay_ms = DEFAULT_SLOW_MS if fault.delay_ms is None else fault.delay_ms
            await send_events_slowly(send, receive, plan, delay_ms / 1000)
            return
        if mode == "malformed":
            events = [*plan.head, provider.malformed_event(request), *plan.tail]
        else:
            events = [*plan.head, *plan.content, *plan.tail]
        await send_events(send, events, plan.headers, plan.content_type)

    async def _fault_before_answer(
        self,
        fault: Fault,
        provider: Provider,
        request: Request,
        payload: Any,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Apply a fault that acts before the answer; True if the response is finished.

        Faults come before authentication on purpose: an overloaded or
        unreachable upstream fails whatever key the caller sent.
        """
        mode = fault.mode
        if mode == "error":
            raise provider.error(fault.status or 500, retry_after=fault.retry_after)
        if mode == "rate_limit":
            retry_after = 1 if fault.retry_after is None else fault.retry_after
            raise provider.rate_limited(provider.model_of(request, payload), retry_after)
        if mode == "no_credit":
            raise provider.out_of_credit()
        if mode in ("timeout", "slow"):
            default = DEFAULT_TIMEOUT_MS if mode == "timeout" else DEFAULT_SLOW_MS
            delay_ms = default if fault.delay_ms is None else fault.delay_ms
            # A client that gave up needs no answer; one still waiting gets a normal one.
            return await pause(receive, delay_ms / 1000)
        if mode == "reset" or (mode == "stream_cut" and not provider.is_stream(request, payload)):
            await start_then_drop(send, provider.transport_headers(request))
            return True
        return False

    async def _send_failure(
        self, provider: Provider, request: Request, failure: Failure, send: Send
    ) -> None:
        headers = [*provider.transport_headers(request), *failure.headers]
        await send_bytes(send, failure.status, failure.body, headers, provider.json_type)

    async def _listing(
        self, provider: Provider | None, body: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if provider is None:
            await send_bytes(send, 200, body, [])
            return
        request = _request(scope, b"")
        try:
            provider.authenticate(request)
        except Failure as failure:
            await self._send_failure(provider, request, failure, send)
            return
        await send_bytes(send, 200, body, provider.transport_headers(request), provider.json_type)

    async def _google(self, scope: Scope, receive: Receive, send: Send) -> None:
        version, _, rest = scope["path"][len("/google/") :].partition("/")
        if version not in ("v1beta", "v1") or not rest.startswith("models/"):
            await self._google_not_found(scope, send)
            return
        model, _, method = rest[len("models/") :].partition(":")
        if scope["method"] == "POST" and method in ("generateContent", "streamGenerateContent"):
            stream = method == "streamGenerateContent"
            sse = stream and b"alt=sse" in scope.get("query_string", b"")
            await self._chat(
                self.google, scope, receive, send, path_model=model, stream_path=stream, sse=sse
            )
        elif scope["method"] == "POST" and method == "countTokens":
            await self._count_tokens(model, scope, receive, send)
        elif scope["method"] == "GET" and not method:
            await self._google_model(model, scope, send)
        else:
            await self._google_not_found(scope, send)

    async def _count_tokens(self, model: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = _request(scope, await read_body(receive), model)
        try:
            self.google.authenticate(request)
            try:
                payload = orjson.loads(request.body or b"null")
            except orjson.JSONDecodeError:
                payload = None
            body = self.google.count_tokens(request, payload)
        except Failure as failure:
            await self._send_failure(self.google, request, failure, send)
            return
        await send_bytes(send, 200, body, [], self.google.json_type)

    async def _google_model(self, model: str, scope: Scope, send: Send) -> None:
        request = _request(scope, b"", model)
        try:
            self.google.authenticate(request)
            body = self.google.model_resource(model)
            if body is None:
                raise self.google.model_not_found(model)
        except Failure as failure:
            await self._send_failure(self.google, request, failure, send)
            return
        await send_bytes(send, 200, body, [], self.google.json_type)

    async def _google_not_found(self, scope: Scope, send: Send) -> None:
        failure = self.google.fail(404, f"Method not found: {scope['path']}")
        await send_bytes(send, 404, failure.body, [], self.google.json_type)

    # -- control API ------------------------------------------------------------

    async def _add_fault(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            fault = self.faults.add(orjson.loads(await read_body(receive) or b"null"))
        except (orjson.JSONDecodeError, ValueError) as exc:
            await send_json(send, 400, {"error": str(exc)})
            return
        await send_json(send, 201, fault.describe())

    async def _list_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"faults": self.faults.describe()})

    async def _clear_faults(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider = _query(scope).get("provider")
        await send_json(send, 200, {"cleared": self.faults.clear(provider)})

    async def _list_calls(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.calls.describe())

    async def _reset_calls(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.reset()
        await send_json(send, 200, self.calls.describe())

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok"})


def _quota_reset(fault: Fault | None) -> float:
    """Seconds until the quota_low fault's quota resets (its retry_after; 10 by default)."""
    return 10.0 if fault is None or fault.retry_after is None else fault.retry_after


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}


def _request(
    scope: Scope,
    body: bytes,
    path_model: str | None = None,
    stream_path: bool = False,
    sse: bool = False,
) -> Request:
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=_query(scope),
        headers={
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        },
        body=body,
        path_model=path_model,
        stream_path=stream_path,
        sse=sse,
    )


def create_app(delay_ms: int | None = None) -> Simulator:
    """A fresh simulator; delay_ms defaults to $SIM_DELAY_MS (0 when unset)."""
    return Simulator(delay_ms=delay_ms)


app = create_app()
