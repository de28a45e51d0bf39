"""Validation of the OpenAI chat request subset Switchboard accepts.

A request malformed on its face is refused here with a 400 naming the field,
before any provider is called (and before anything is charged).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from project.errors import ApiError

ROLES = {"system", "developer", "user", "assistant", "tool"}
# Parameters passed through to providers (each adapter maps what its protocol has).
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
# `X-Switchboard-Meeting-Type: sales` is metadata `meeting_type: sales` (metadata wins).
CONTEXT_HEADER_PREFIX = "x-switchboard-"
# Metadata keys naming the end user when the request has no OpenAI `user` field.
END_USER_KEYS = ("user_id", "user")
PASSTHROUGH = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "seed",
    "user",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
}


@dataclass
class ChatRequest:
    """A validated chat request. ``params`` holds the OpenAI parameters as sent."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def end_user(self) -> str:
        """The client's id of the person behind the request, if it sent one."""
        user = self.params.get("user")
        if isinstance(user, str) and user:
            return user
        return next((self.metadata[k] for k in END_USER_KEYS if self.metadata.get(k)), "")

    @property
    def max_output_tokens(self) -> int | None:
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return int(value) if value is not None else None

    @property
    def stop(self) -> list[str]:
        stop = self.params.get("stop")
        if stop is None:
            return []
        return [stop] if isinstance(stop, str) else list(stop)

    @property
    def wants_json(self) -> bool:
        fmt = self.params.get("response_format") or {}
        return fmt.get("type") in ("json_object", "json_schema")

    def prompt_chars(self) -> int:
        total = 0
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(
                    len(part.get("text", "")) for part in content if isinstance(part, dict)
                )
        return total


def bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(status=400, message=message, code=code, param=param)


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    return validate_chat_body(body)


def validate_chat_body(body: dict[str, Any]) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required: a route name (e.g. 'summary') or a model name.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' is required and must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        _validate_message(message, index)
    for name, (low, high) in NUMERIC_RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise bad(f"'{name}' must be a number between {low:g} and {high:g}.", name)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise bad(f"'{name}' must be a positive integer.", name)
    if body.get("n") not in (None, 1):
        raise bad("'n' greater than 1 is not supported; send separate requests.", "n")
    _validate_stop(body.get("stop"))
    _validate_response_format(body.get("response_format"))
    _validate_tools(body.get("tools"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false.", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise bad("'stream_options' must be an object.", "stream_options")
    if stream_options and not stream:
        raise bad("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise bad("'metadata' must be an object of string values.", "metadata")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        params={k: v for k, v in body.items() if k in PASSTHROUGH and v is not None},
        metadata=metadata,
    )


def _validate_message(message: Any, index: int) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad(f"'{where}' must be an object with 'role' and 'content'.", where)
    role = message.get("role")
    if role not in ROLES:
        raise bad(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
    content = message.get("content")
    if role == "assistant" and content is None and message.get("tool_calls"):
        return
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise bad(f"'{where}.tool_call_id' is required for tool messages.", f"{where}.tool_call_id")
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    ):
        return
    raise bad(
        f"'{where}.content' must be a string or an array of content parts.", f"{where}.content"
    )


def _validate_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        return
    raise bad("'stop' must be a string or an array of up to 4 strings.", "stop")


def _validate_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise bad(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            "response_format",
        )


def _validate_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise bad("'tools' must be an array.", "tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            raise bad(
                f'\'tools[{index}]\' must be {{"type": "function", "function": {{"name": ...}}}}.',
                f"tools[{index}]",
            )


def add_context_headers(request: ChatRequest, headers: Iterable[tuple[str, str]]) -> None:
    """Fill the request's metadata from ``X-Switchboard-*`` headers it does not already set."""
    for name, value in headers:
        lowered = name.lower()
        if lowered.startswith(CONTEXT_HEADER_PREFIX):
            key = lowered[len(CONTEXT_HEADER_PREFIX) :].replace("-", "_")
            request.metadata.setdefault(key, value)
