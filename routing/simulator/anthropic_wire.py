"""Anthropic Messages API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from routing.simulator.engine import (
    Conversation,
    Reply,
    Tool,
    Turn,
    argument_pieces,
    new_id,
    stream_pieces,
)
from routing.simulator.openai_wire import bearer, seconds_header
from routing.simulator.wire import Failure, Headers, Provider, Request, StreamPlan

STOP_REASONS = {
    "stop": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool": "tool_use",
}
REQUESTS_LIMIT = 4_000
TOKENS_LIMIT = 2_000_000
ANTHROPIC_MODELS = (
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-01-01T00:00:00Z"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-01-01T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: (
        "This request would exceed the rate limit for your organization of "
        f"{REQUESTS_LIMIT} requests per minute. For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits."
    ),
    500: "Internal server error",
    529: "Overloaded",
}
_MODEL_LIST = orjson.dumps(
    {
        "data": [
            {"type": "model", "id": model, "display_name": name, "created_at": created}
            for model, name, created in ANTHROPIC_MODELS
        ],
        "has_more": False,
        "first_id": ANTHROPIC_MODELS[0][0],
        "last_id": ANTHROPIC_MODELS[-1][0],
    }
)


def event(name: str, value: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(value) + b"\n\n"


_PING = event("ping", {"type": "ping"})
_MESSAGE_STOP = event("message_stop", {"type": "message_stop"})
_reset_cache: tuple[int, bytes] = (0, b"")


def _reset_time() -> bytes:
    """RFC 3339 time of the next window reset, formatted at most once a second."""
    global _reset_cache
    second = int(time.time())
    if _reset_cache[0] != second:
        stamp = datetime.fromtimestamp(second + 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _reset_cache = (second, stamp.encode())
    return _reset_cache[1]


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") == "tool_use":
            parts.append(orjson.dumps(block.get("input", {})).decode())
        elif block.get("type") == "tool_result":
            parts.append(_block_text(block.get("content")))
    return "".join(parts)


class AnthropicProvider(Provider):
    name = "anthropic"

    def fail(
        self,
        status: int,
        message: str,
        kind: str | None = None,
        headers: Headers | None = None,
    ) -> Failure:
        error_type = (
            kind
            or _ERROR_TYPES.get(status)
            or ("api_error" if status >= 500 else "invalid_request_error")
        )
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_{new_id()}",
        }
        return Failure(status, orjson.dumps(body), headers)

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> Failure:
        text = (
            message
            or _ERROR_MESSAGES.get(status)
            or ("Internal server error" if status >= 500 else "Invalid request")
        )
        headers = [] if retry_after is None else [(b"retry-after", seconds_header(retry_after))]
        return self.fail(status, text, headers=headers)

    def rate_limited(self, model: str, retry_after: float) -> Failure:
        failure = self.error(429, retry_after=retry_after)
        failure.headers += [
            (b"anthropic-ratelimit-requests-limit", b"%d" % REQUESTS_LIMIT),
            (b"anthropic-ratelimit-requests-remaining", b"0"),
            (b"anthropic-ratelimit-requests-reset", _reset_time()),
        ]
        return failure

    def out_of_credit(self) -> Failure:
        return self.fail(
            400,
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
            "Billing to upgrade or purchase credits.",
        )

    def model_not_found(self, model: str) -> Failure:
        return self.fail(404, f"model: {model}")

    def context_exceeded(self, model: str, prompt: int, window: int) -> Failure:
        return self.fail(400, f"prompt is too long: {prompt} tokens > {window} maximum")

    def authenticate(self, request: Request) -> None:
        key = request.headers.get("x-api-key") or bearer(request.headers)
        if not key:
            raise self.fail(401, "x-api-key header is required")
        if key.startswith("invalid"):
            raise self.fail(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise self.fail(400, "anthropic-version: header is required")

    def parse(self, request: Request, payload: Any) -> Conversation:
        if not isinstance(payload, dict):
            raise self.fail(400, "There was an error parsing the body of your request.")
        for required in ("model", "max_tokens", "messages"):
            if required not in payload:
                raise self.fail(400, f"{required}: Field required")
        model = payload["model"]
        if not isinstance(model, str) or not model:
            raise self.fail(400, "model: Input should be a valid string")
        max_tokens = payload["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise self.fail(400, "max_tokens: Input should be a valid integer greater than 0")
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise self.fail(400, "messages: at least one message is required")

        texts: list[str] = []
        system = _block_text(payload.get("system"))
        if system:
            texts.append(system)
        last_user_text = ""
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                raise self.fail(
                    400, f"messages.{index}.role: Input should be 'user' or 'assistant'"
                )
            text = _block_text(message.get("content"))
            texts.append(text)
            if role == "user" and not _tool_results(message.get("content")):
                last_user_text = text

        last = messages[-1]
        results = _tool_results(last.get("content")) if last["role"] == "user" else []
        last_turn: Turn = "assistant"
        if results:
            last_turn = "tool"
        elif last["role"] == "user":
            last_turn = "user"

        tools = [
            Tool(tool["name"], tool.get("input_schema") or {})
            for tool in payload.get("tools") or []
            if isinstance(tool, dict) and isinstance(tool.get("name"), str)
        ]
        choice = payload.get("tool_choice")
        if not isinstance(choice, dict):
            choice = {}
        stops = [s for s in payload.get("stop_sequences") or [] if isinstance(s, str)]
        output_format = payload.get("output_format") or (payload.get("output_config") or {}).get(
            "format"
        )
        schema = output_format.get("schema") if isinstance(output_format, dict) else None
        return Conversation(
            provider=self.name,
            model=model,
            texts=texts,
            last_user_text=last_user_text,
            last_turn=last_turn,
            tool_result="".join(results),
            tools=tools,
            tools_enabled=choice.get("type") != "none",
            forced_tool=choice.get("name") if choice.get("type") == "tool" else None,
            max_tokens=max_tokens,
            stop=stops,
            json_mode=isinstance(schema, dict),
            json_schema=schema if isinstance(schema, dict) else None,
            stream=payload.get("stream") is True,
        )

    def transport_headers(self, request: Request) -> Headers:
        return [(b"request-id", f"req_{new_id()}".encode())]

    def nearly_spent(self, headers: Headers, reset_seconds: float) -> Headers:
        at = datetime.fromtimestamp(time.time() + reset_seconds, UTC)
        spent = {
            b"anthropic-ratelimit-requests-remaining": b"1",
            b"anthropic-ratelimit-requests-reset": at.strftime("%Y-%m-%dT%H:%M:%SZ").encode(),
        }
        return [(name, spent.get(name, value)) for name, value in headers]

    def success_headers(self, request: Request, reply: Reply) -> Headers:
        reset = _reset_time()
        remaining = b"%d" % (TOKENS_LIMIT - reply.prompt_tokens)
        return [
            *self.transport_headers(request),
            (b"anthropic-ratelimit-requests-limit", b"%d" % REQUESTS_LIMIT),
            (b"anthropic-ratelimit-requests-remaining", b"%d" % (REQUESTS_LIMIT - 1)),
            (b"anthropic-ratelimit-requests-reset", reset),
            (b"anthropic-ratelimit-tokens-limit", b"%d" % TOKENS_LIMIT),
            (b"anthropic-ratelimit-tokens-remaining", remaining),
            (b"anthropic-ratelimit-tokens-reset", reset),
            (b"anthropic-ratelimit-input-tokens-limit", b"%d" % TOKENS_LIMIT),
            (b"anthropic-ratelimit-input-tokens-remaining", remaining),
            (b"anthropic-ratelimit-input-tokens-reset", reset),
            (b"anthropic-ratelimit-output-tokens-limit", b"%d" % TOKENS_LIMIT),
            (b"anthropic-ratelimit-output-tokens-remaining", b"%d" % TOKENS_LIMIT),
            (b"anthropic-ratelimit-output-tokens-reset", reset),
        ]

    def respond(
        self, request: Request, conversation: Conversation, reply: Reply
    ) -> tuple[bytes, Headers]:
        if reply.tool_name:
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{new_id()}",
                    "name": reply.tool_name,
                    "input": orjson.loads(reply.tool_arguments),
                }
            ]
        else:
            content = [{"type": "text", "text": reply.text}]
        body = {
            **self._message(conversation, reply, reply.completion_tokens),
            "content": content,
            "stop_reason": STOP_REASONS[reply.finish],
            "stop_sequence": reply.stop_sequence,
        }
        return orjson.dumps(body), self.success_headers(request, reply)

    def stream(self, request: Request, conversation: Conversation, reply: Reply) -> StreamPlan:
        start = {
            **self._message(conversation, reply, 1),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if reply.tool_name:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_{new_id()}",
                "name": reply.tool_name,
                "input": {},
            }
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in argument_pieces(reply.tool_arguments)
            ]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in stream_pieces(reply.text)]
        finish = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS[reply.finish],
                "stop_sequence": reply.stop_sequence,
            },
            "usage": {"output_tokens": reply.completion_tokens},
        }
        return StreamPlan(
            head=[
                event("message_start", {"type": "message_start", "message": start}),
                event(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                ),
                _PING,
            ],
            content=[
                event(
                    "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}
                )
                for d in deltas
            ],
            tail=[
                event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                event("message_delta", finish),
                _MESSAGE_STOP,
            ],
            headers=self.success_headers(request, reply),
        )

    def malformed_event(self, request: Request) -> bytes:
        return b"event: content_block_delta\ndata: {this is not json\n\n"

    def models(self) -> bytes:
        return _MODEL_LIST

    def _message(self, conversation: Conversation, reply: Reply, output: int) -> dict[str, Any]:
        return {
            "id": f"msg_{new_id()}",
            "type": "message",
            "role": "assistant",
            "model": conversation.model,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens": output,
                "service_tier": "standard",
            },
        }


def _tool_results(content: Any) -> list[str]:
    if not isinstance(content, list):
        return []
    return [
        _block_text(block.get("content"))
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
