"""The Anthropic Messages protocol (`POST {base}/messages`).

Request (OpenAI → Anthropic):

| OpenAI                                  | Anthropic                                          |
|-----------------------------------------|----------------------------------------------------|
| `system` / `developer` messages         | top-level `system`, joined with blank lines        |
| `user` / `assistant` messages           | `user` / `assistant` turns; consecutive turns of   |
|                                         | one role merged (the API wants them alternating)   |
| text part / `image_url` part            | `text` block / `image` block (data: URL → base64   |
|                                         | source, http(s) URL → url source); other parts are |
|                                         | REJECTED `unsupported_content`                     |
| assistant `tool_calls`                  | `tool_use` blocks, `input` = parsed arguments      |
| `tool` message                          | `tool_result` block in a `user` turn               |
| `max_completion_tokens` / `max_tokens`  | `max_tokens` (required: `DEFAULT_MAX_TOKENS` if    |
|                                         | the client sent none)                              |
| `temperature` (0-2)                     | `temperature` clamped to [0, 1], Anthropic's range |
| `top_p`                                 | `top_p`, unless `temperature` is also sent: recent |
|                                         | Claude models refuse both together                 |
| `stop`                                  | `stop_sequences`                                   |
| `tools[].function`                      | `tools[]` {name, description, input_schema}        |
| `tool_choice` auto/required/none/named  | {"type": auto / any / none / tool + name}          |
| `parallel_tool_calls: false`            | `tool_choice.disable_parallel_tool_use: true`      |
| `response_format` json_object /        | no JSON mode: an instruction appended to `system`  |
|   json_schema                           | asking for one JSON object only (with the schema)  |
| `user`                                  | `metadata.user_id`                                 |
| `seed`, penalties, `logit_bias`,        | dropped: Anthropic has no equivalent               |
|   `logprobs`                            |                                                    |

Response (Anthropic → OpenAI):

| `stop_reason`                                  | `finish_reason`                        |
|------------------------------------------------|----------------------------------------|
| end_turn, stop_sequence, pause_turn, unknown   | stop (tool_calls if a tool_use block)  |
| max_tokens, model_context_window_exceeded      | length                                 |
| tool_use                                       | tool_calls                             |
| refusal                                        | content_filter                         |

| Anthropic `usage`                                       | OpenAI `usage`          |
|---------------------------------------------------------|-------------------------|
| input_tokens + cache_creation_input_tokens              | prompt_tokens           |
|   + cache_read_input_tokens                             |                         |
| cache_read_input_tokens                                 | prompt_tokens_details   |
|                                                         |   .cached_tokens        |
| output_tokens                                           | completion_tokens       |

Errors (`{"type": "error", "error": {"type", "message"}}`, also as an SSE `error` event):

| status / error.type                          | kind      | code                    |
|----------------------------------------------|-----------|-------------------------|
| 529 or `overloaded_error`                    | TRANSIENT | overloaded              |
| 400 "prompt is too long"                     | REJECTED  | context_length_exceeded |
| 400 "credit balance is too low"              | PERMANENT | no_credit               |
| 413 `request_too_large`                      | REJECTED  | request_too_large       |
| 401 / 403                                    | PERMANENT | invalid_api_key, forbidden |
| 404                                          | PERMANENT | model_not_found         |
| 429                                          | TRANSIENT | rate_limited (+ retry-after) |
| 5xx, and unknown error types in a stream     | TRANSIENT |                         |
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from routing.providers.base import (
    SYSTEM_ROLES,
    Adapter,
    Completion,
    FailureKind,
    ProviderError,
    Quota,
    StreamTranslator,
    Target,
    UpstreamRequest,
    Usage,
    classify_status,
    data_url,
    default_code,
    error_json,
    header_int,
    loads_object,
    malformed,
    retry_after_seconds,
    scrub_secrets,
    stream_incomplete,
    system_prompt,
    tool_arguments,
    translated_completion,
    unsupported,
)
from routing.providers.sse import SSEEvent
from routing.schema import ChatRequest

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_INSTRUCTION = (
    "Reply with a single JSON object and nothing else: no prose before or after it "
    "and no Markdown code fences."
)
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
# Error types as they arrive inside a 200 stream, where there is no status to go by.
_KIND_BY_TYPE = {
    "invalid_request_error": (FailureKind.REJECTED, "bad_request"),
    "request_too_large": (FailureKind.REJECTED, "request_too_large"),
    "authentication_error": (FailureKind.PERMANENT, "invalid_api_key"),
    "permission_error": (FailureKind.PERMANENT, "forbidden"),
    "not_found_error": (FailureKind.PERMANENT, "model_not_found"),
    "billing_error": (FailureKind.PERMANENT, "no_credit"),
    "rate_limit_error": (FailureKind.TRANSIENT, "rate_limited"),
}


class AnthropicAdapter(Adapter):
    protocol = "anthropic"

    def chat_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        params = request.params
        system = [system_prompt(request.messages)]
        if request.wants_json:
            system.append(_json_instruction(params["response_format"]))
        body: dict[str, Any] = {
            "model": target.model,
            "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
            "messages": _turns(request.messages),
        }
        if any(system):
            body["system"] = "\n\n".join(part for part in system if part)
        if "temperature" in params:
            body["temperature"] = min(max(float(params["temperature"]), 0.0), 1.0)
        elif "top_p" in params:
            body["top_p"] = params["top_p"]
        if request.stop:
            body["stop_sequences"] = request.stop
        if params.get("tools"):
            body["tools"] = [_tool(tool["function"]) for tool in params["tools"]]
            tool_choice = _tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
            if tool_choice:
                body["tool_choice"] = tool_choice
        if params.get("user"):
            body["metadata"] = {"user_id": str(params["user"])}
        if request.stream:
            body["stream"] = True
        return UpstreamRequest(
            url=f"{target.base_url.rstrip('/')}/messages",
            headers={
                "x-api-key": target.api_key,
                "anthropic-version": API_VERSION,
                "content-type": "application/json",
            },
            body=orjson.dumps(body),
        )

    def parse_completion(self, target: Target, request: ChatRequest, body: bytes) -> Completion:
        data = loads_object(target.provider, body)
        content = data.get("content")
        if not isinstance(content, list):
            raise malformed(target.provider, "no content in the message")
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                texts.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                tool_calls.append(
                    {
                        "id": block.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
        text = "".join(texts)
        usage = read_usage(data.get("usage"), Usage())
        finish = finish_reason(data.get("stop_reason"), bool(tool_calls))
        completion_id = f"chatcmpl-{data.get('id') or uuid.uuid4().hex}"
        return translated_completion(
            completion_id=completion_id,
            model=target.model,
            text=text,
            tool_calls=tool_calls,
            finish_reason=finish,
            usage=usage,
        )

    def stream_translator(self, target: Target, request: ChatRequest) -> StreamTranslator:
        return AnthropicStream(request=request, target=target)

    def quota(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> Quota | None:
        return rate_limit_headers(headers) or super().quota(status, headers, body)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        data = error_json(body)
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return super().classify(status, headers, body)
        return error_from_object(status, error, retry_after_seconds(headers))


def rate_limit_headers(headers: Mapping[str, str], now: float | None = None) -> Quota | None:
    """Anthropic's `anthropic-ratelimit-*` headers; resets are RFC 3339 times.

    Tokens are limited three ways (all, input, output): the tightest one is reported.
    """
    now = time.time() if now is None else now
    tokens = [
        (
            header_int(headers, f"anthropic-ratelimit-{kind}-limit"),
            header_int(headers, f"anthropic-ratelimit-{kind}-remaining"),
            _seconds_until(headers.get(f"anthropic-ratelimit-{kind}-reset"), now),
        )
        for kind in ("tokens", "input-tokens", "output-tokens")
    ]
    known = [(limit, left, reset) for limit, left, reset in tokens if limit and left is not None]
    tightest: tuple[int | None, int | None, float | None] = (None, None, None)
    if known:
        tightest = min(known, key=lambda t: t[1] / t[0])
    quota = Quota(
        requests_limit=header_int(headers, "anthropic-ratelimit-requests-limit"),
        requests_remaining=header_int(headers, "anthropic-ratelimit-requests-remaining"),
        requests_reset=_seconds_until(headers.get("anthropic-ratelimit-requests-reset"), now),
        tokens_limit=tightest[0],
        tokens_remaining=tightest[1],
        tokens_reset=tightest[2],
    )
    return None if quota == Quota() else quota


def _seconds_until(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


@dataclass
class AnthropicStream(StreamTranslator):
    stopped: bool = False
    # Anthropic numbers content blocks across text and tool_use; OpenAI numbers tool calls only.
    tool_index: dict[int, int] = field(default_factory=dict)

    def feed(self, event: SSEEvent) -> list[bytes]:
        data = loads_object(self.target.provider, event.data)
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            self.chunk_id = f"chatcmpl-{message.get('id') or uuid.uuid4().hex}"
            self.created = int(time.time())
            self.usage = read_usage(message.get("usage"), Usage())
            return [self.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index.setdefault(int(data.get("index", 0)), len(self.tool_index))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self.chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._text(block["text"])]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [self._text(delta["text"])]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                tool = self.tool_index.get(int(data.get("index", 0)))
                if tool is not None:
                    call = {"index": tool, "function": {"arguments": delta["partial_json"]}}
                    return [self.chunk({"tool_calls": [call]})]
            # thinking_delta, signature_delta, citations_delta: nothing OpenAI's format carries.
            return []
        if kind == "message_delta":
            self.usage = read_usage(data.get("usage"), self.usage or Usage())
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            self.finish_reason = finish_reason(stop_reason, bool(self.tool_index))
            return [self.chunk({}, self.finish_reason)]
        if kind == "message_stop":
            self.stopped = True
            return []
        if kind == "error":
            error = data.get("error")
            raise error_from_object(None, error if isinstance(error, dict) else {}, None)
        # ping, content_block_stop, and event types added after this was written.
        return []

    def finish(self) -> list[bytes]:
        if not self.stopped:
            raise stream_incomplete(self.target.provider, "message_stop")
        return []

    def _text(self, text: str) -> bytes:
        self.text_parts.append(text)
        return self.chunk({"content": text})


def finish_reason(stop_reason: Any, has_tool_calls: bool) -> str:
    mapped = FINISH_REASONS.get(str(stop_reason), "stop")
    # A truncated tool call stays "length": the client must not run half-written arguments.
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def read_usage(usage: Any, previous: Usage) -> Usage:
    """Anthropic's usage, merged over `previous`: message_delta repeats only some fields."""
    if not isinstance(usage, dict):
        return previous
    result = Usage(previous.prompt_tokens, previous.completion_tokens, previous.cached_tokens)
    if any(key in usage for key in ("input_tokens", "cache_read_input_tokens")):
        cached = int(usage.get("cache_read_input_tokens") or 0)
        result.prompt_tokens = (
            int(usage.get("input_tokens") or 0)
            + int(usage.get("cache_creation_input_tokens") or 0)
            + cached
        )
        result.cached_tokens = cached
    if "output_tokens" in usage:
        result.completion_tokens = int(usage.get("output_tokens") or 0)
    return result


def error_from_object(
    status: int | None, error: dict[str, Any], retry_after: float | None
) -> ProviderError:
    error_type = str(error.get("type") or "")
    message = scrub_secrets(str(error.get("message") or "").strip())
    lowered = message.lower()
    if error_type == "overloaded_error" or status == 529:
        kind, code = FailureKind.TRANSIENT, "overloaded"
    elif "prompt is too long" in lowered:
        kind, code = FailureKind.REJECTED, "context_length_exceeded"
    elif "credit balance" in lowered:
        kind, code = FailureKind.PERMANENT, "no_credit"
    elif status is None:
        kind, code = _KIND_BY_TYPE.get(error_type, (FailureKind.TRANSIENT, "stream_error"))
    else:
        kind, code = classify_status(status), default_code(status)
    return ProviderError(
        kind=kind,
        message=message or (f"HTTP {status}" if status else error_type or "stream error"),
        status=status,
        code=code,
        retry_after=retry_after,
    )


def _json_instruction(response_format: dict[str, Any]) -> str:
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") == "json_schema" and schema:
        return f"{JSON_INSTRUCTION} It must match this JSON Schema: {orjson.dumps(schema).decode()}"
    return JSON_INSTRUCTION


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role in SYSTEM_ROLES:
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            blocks += [_tool_use(call) for call in message.get("tool_calls") or []]
        else:
            blocks = _blocks(message.get("content"))
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return turns


def _blocks(content: Any) -> list[dict[str, Any]]:
    # Anthropic refuses empty text blocks, which OpenAI clients send next to tool calls.
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind) or ""
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url")))
        else:
            raise unsupported("Anthropic", f"content part type '{kind}'")
    return blocks


def _image(image_url: Any) -> dict[str, Any]:
    url = str((image_url.get("url") if isinstance(image_url, dict) else image_url) or "")
    data = data_url(url)
    if data:
        source = {"type": "base64", "media_type": data[0], "data": data[1]}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise unsupported("Anthropic", "an image URL that is neither base64 data nor http(s)")
    return {"type": "image", "source": source}


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    name = (call.get("function") or {}).get("name")
    return {"type": "tool_use", "id": call.get("id"), "name": name, "input": tool_arguments(call)}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id"),
        "content": content if isinstance(content, str) else _blocks(content),
    }


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        tool["description"] = function["description"]
    tool["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return tool


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        result: dict[str, Any] = {"type": "tool", "name": name}
    elif choice in TOOL_CHOICES:
        result = {"type": TOOL_CHOICES[choice]}
    elif parallel is False:
        result = {"type": "auto"}
    else:
        return None
    if parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result
