"""The Gemini API protocol (`{base}/models/{model}:generateContent`, or
`:streamGenerateContent?alt=sse`: without `alt=sse` the stream is a JSON array, not SSE).

| OpenAI request                         | Gemini                                                |
|----------------------------------------|-------------------------------------------------------|
| `system` / `developer` messages        | `systemInstruction.parts[0].text`, joined             |
| `user` / `assistant` messages          | `user` / `model` turns, same-role turns merged        |
| text / `image_url` part                | `text` / `inlineData` (data: URL) or `fileData`       |
|                                        | (http(s) URL to a known image type); else REJECTED    |
| assistant `tool_calls`                 | `functionCall` parts {name, args}                     |
| `tool` message                         | `functionResponse` {name of the call with that id,    |
|                                        | response: the JSON object sent, or {"result": text}}  |
| `temperature`, `top_p`, `seed`         | `generationConfig.temperature`, `.topP`, `.seed`      |
| `max_completion_tokens`, `max_tokens`  | `generationConfig.maxOutputTokens`                    |
| `stop`                                 | `generationConfig.stopSequences`                      |
| `response_format` json_object / schema | `responseMimeType: application/json` (+ the schema as |
|                                        | `responseJsonSchema`, which takes plain JSON Schema)  |
| `tools[].function`                     | `tools[0].functionDeclarations[]` {name, description, |
|                                        | parametersJsonSchema}                                 |
| `tool_choice` auto/required/none/named | `toolConfig.functionCallingConfig.mode` AUTO/ANY/NONE,|
|                                        | named: ANY + `allowedFunctionNames`                   |
| `user`, penalties, `logit_bias`        | dropped                                               |

Tool schemas go in `parametersJsonSchema`, not `parameters`: that one is an OpenAPI
subset refusing keys OpenAI clients send (`additionalProperties`, `$schema`).

| `finishReason`                                               | `finish_reason`            |
|--------------------------------------------------------------|----------------------------|
| STOP, FINISH_REASON_UNSPECIFIED, MALFORMED_FUNCTION_CALL, ?  | stop (tool_calls if calls) |
| MAX_TOKENS                                                   | length                     |
| SAFETY, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY,   | content_filter             |
| RECITATION, OTHER (as LiteLLM)                               | content_filter             |
| no candidates + `promptFeedback.blockReason`                 | content_filter, no text    |

| `usageMetadata`                                  | OpenAI `usage`                           |
|--------------------------------------------------|------------------------------------------|
| promptTokenCount + toolUsePromptTokenCount       | prompt_tokens (both are billed as input) |
| candidatesTokenCount + thoughtsTokenCount        | completion_tokens                        |
| cachedContentTokenCount                          | prompt_tokens_details.cached_tokens      |

Gemini has no tool call ids; ours are `call_<index>_<random>`. Its stream has no end
marker, repeats `usageMetadata` as a running total and may put `finishReason` on
intermediate chunks: `finish()` writes the finish chunk, and a stream that never
carried a finishReason is incomplete.

Errors, from `{"error": {"code", "message", "status", "details"}}`:

| status / body                                         | kind      | code                      |
|-------------------------------------------------------|-----------|---------------------------|
| 400 reason API_KEY_INVALID or "API key not valid"     | PERMANENT | invalid_api_key           |
| 400 FAILED_PRECONDITION (billing, region)             | PERMANENT | failed_precondition       |
| 400 "input token count ... exceeds"                   | REJECTED  | context_length_exceeded   |
| 429 RESOURCE_EXHAUSTED                                | TRANSIENT | rate_limited, retry_after |
|   (retry_after: RetryInfo.retryDelay, else header)    |           |                           |
| 404 NOT_FOUND                                         | PERMANENT | model_not_found           |
| 500, 503, 504, others; a body that is not JSON        | by status (base `Adapter.classify`)   |
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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
    content_text,
    data_url,
    default_code,
    error_json,
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

CONTENT_FILTER = "content_filter"
# STOP, FINISH_REASON_UNSPECIFIED, MALFORMED_FUNCTION_CALL and values added later are "stop".
FINISH_REASONS = {"MAX_TOKENS": "length"} | dict.fromkeys(
    ("SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "RECITATION", "OTHER"),
    CONTENT_FILTER,
)
TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
# fileData needs a mimeType, and an adapter does no I/O to learn it from the URL.
_IMAGE_TYPES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "gif": "gif"}
_TOO_MANY_TOKENS = re.compile(r"input token count.*exceeds", re.I | re.S)


class GeminiAdapter(Adapter):
    protocol = "gemini"

    def chat_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        params = request.params
        base = target.base_url.rstrip("/")
        model = target.model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        body: dict[str, Any] = {"contents": _contents(request.messages)}
        system = system_prompt(request.messages)
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
            if ours in params:
                config[theirs] = params[ours]
        if request.max_output_tokens:
            config["maxOutputTokens"] = request.max_output_tokens
        if request.stop:
            config["stopSequences"] = request.stop
        if request.wants_json:
            config["responseMimeType"] = "application/json"
            response_format = params["response_format"]
            schema = (response_format.get("json_schema") or {}).get("schema")
            if response_format.get("type") == "json_schema" and schema:
                config["responseJsonSchema"] = schema
        if config:
            body["generationConfig"] = config
        if params.get("tools"):
            declarations = [_declaration(tool["function"]) for tool in params["tools"]]
            body["tools"] = [{"functionDeclarations": declarations}]
            tool_config = _tool_config(params.get("tool_choice"))
            if tool_config:
                body["toolConfig"] = {"functionCallingConfig": tool_config}
        return UpstreamRequest(
            url=f"{base}/models/{model}:{method}",
            headers={"x-goog-api-key": target.api_key, "content-type": "application/json"},
            body=orjson.dumps(body),
        )

    def parse_completion(self, target: Target, request: ChatRequest, body: bytes) -> Completion:
        data = loads_object(target.provider, body)
        usage = read_usage(data.get("usageMetadata")) or Usage()
        candidates = data.get("candidates")
        tool_calls: list[dict[str, Any]] = []
        if candidates and isinstance(candidates[0], dict):
            candidate = candidates[0]
            texts, calls = _read_parts(candidate)
            text = "".join(texts)
            tool_calls = [_tool_call(index, call) for index, call in enumerate(calls)]
            finish = finish_reason(candidate.get("finishReason"), bool(tool_calls))
        elif (data.get("promptFeedback") or {}).get("blockReason"):
            text, finish = "", CONTENT_FILTER
        else:
            raise malformed(target.provider, "no candidates and no blockReason")
        return translated_completion(
            completion_id=_completion_id(data),
            model=target.model,
            text=text,
            tool_calls=tool_calls,
            finish_reason=finish,
            usage=usage,
        )

    def stream_translator(self, target: Target, request: ChatRequest) -> StreamTranslator:
        return GeminiStream(request=request, target=target)

    def quota(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> Quota | None:
        """Gemini sends no rate-limit headers; a 429 says when to come back in its body."""
        if status != 429:
            return None
        error = self.classify(status, headers, body)
        return Quota(requests_remaining=0, requests_reset=error.retry_after)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        data = error_json(body)
        # Some Google front ends answer with a one-element array around the error object.
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = data[0]
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return super().classify(status, headers, body)
        return error_from_object(status, error, retry_after_seconds(headers))


@dataclass
class GeminiStream(StreamTranslator):
    raw_finish: str | None = None
    blocked: bool = False
    role_sent: bool = False
    tool_calls: int = 0

    def feed(self, event: SSEEvent) -> list[bytes]:
        data = loads_object(self.target.provider, event.data)
        if isinstance(data.get("error"), dict):
            raise error_from_object(None, data["error"], None)
        if not self.chunk_id:
            self.chunk_id = _completion_id(data)
            self.created = int(time.time())
        usage = read_usage(data.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        candidates = data.get("candidates")
        if not candidates or not isinstance(candidates[0], dict):
            if (data.get("promptFeedback") or {}).get("blockReason"):
                self.blocked = True
                self.finish_reason = CONTENT_FILTER
            return []
        candidate = candidates[0]
        payloads = []
        texts, calls = _read_parts(candidate)
        if texts:
            text = "".join(texts)
            self.text_parts.append(text)
            payloads.append(self._delta({"content": text}))
        if calls:
            deltas = []
            for call in calls:
                delta = _tool_call(self.tool_calls, call)
                deltas.append({"index": self.tool_calls, **delta})
                self.tool_calls += 1
            payloads.append(self._delta({"tool_calls": deltas}))
        if candidate.get("finishReason"):
            self.raw_finish = candidate["finishReason"]
            self.finish_reason = finish_reason(self.raw_finish, self.tool_calls > 0)
        return payloads

    def finish(self) -> list[bytes]:
        if self.raw_finish is None and not self.blocked:
            raise stream_incomplete(self.target.provider, "a finishReason")
        payloads = [] if self.role_sent else [self._delta({"content": ""})]
        if not self.blocked:
            # A functionCall may come on a chunk after the one carrying finishReason.
            self.finish_reason = finish_reason(self.raw_finish, self.tool_calls > 0)
        payloads.append(self.chunk({}, self.finish_reason))
        return payloads

    def _delta(self, delta: dict[str, Any]) -> bytes:
        if not self.role_sent:
            self.role_sent = True
            delta = {"role": "assistant", **delta}
        return self.chunk(delta)


def finish_reason(raw: Any, has_tool_calls: bool) -> str:
    mapped = FINISH_REASONS.get(str(raw), "stop")
    # A truncated or filtered answer keeps its reason even if it holds a functionCall.
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def read_usage(metadata: Any) -> Usage | None:
    if not isinstance(metadata, dict):
        return None
    return Usage(
        prompt_tokens=int(metadata.get("promptTokenCount") or 0)
        + int(metadata.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(metadata.get("candidatesTokenCount") or 0)
        + int(metadata.get("thoughtsTokenCount") or 0),
        cached_tokens=int(metadata.get("cachedContentTokenCount") or 0),
    )


def error_from_object(
    status: int | None, error: dict[str, Any], header_retry: float | None
) -> ProviderError:
    rpc = str(error.get("status") or "")
    message = scrub_secrets(str(error.get("message") or "").strip())
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details if str(d.get("@type", "")).endswith("ErrorInfo")}
    # Inside a 200 stream the error's own code is the only status there is.
    effective = status or (error.get("code") if isinstance(error.get("code"), int) else None)
    retry_after = header_retry
    if "API_KEY_INVALID" in reasons or "api key not valid" in message.lower():
        kind, code = FailureKind.PERMANENT, "invalid_api_key"
    elif rpc == "FAILED_PRECONDITION":
        kind, code = FailureKind.PERMANENT, "failed_precondition"
    elif _TOO_MANY_TOKENS.search(message):
        kind, code = FailureKind.REJECTED, "context_length_exceeded"
    elif effective == 429 or rpc == "RESOURCE_EXHAUSTED":
        kind, code = FailureKind.TRANSIENT, "rate_limited"
        retry_after = _retry_delay(details) or header_retry
    elif effective == 404 or rpc == "NOT_FOUND":
        kind, code = FailureKind.PERMANENT, "model_not_found"
    elif effective is None:
        kind, code = FailureKind.TRANSIENT, "stream_error"
    else:
        kind, code = classify_status(effective), default_code(effective)
    return ProviderError(
        kind=kind,
        message=message or (f"HTTP {status}" if status else rpc or "stream error"),
        status=status,
        code=code,
        retry_after=retry_after,
    )


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    # google.rpc.RetryInfo.retryDelay is a protobuf Duration in JSON: "20s", "1.5s".
    for detail in details:
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("RetryInfo") and isinstance(delay, str):
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                return None
    return None


def _completion_id(data: dict[str, Any]) -> str:
    return f"chatcmpl-{data.get('responseId') or uuid.uuid4().hex}"


def _read_parts(candidate: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("functionCall"), dict):
            calls.append(part["functionCall"])
        # Thought summaries (`thought: true`) are reasoning, not the answer.
        elif isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return texts, calls


def _tool_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"call_{index}_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {
            "name": call.get("name"),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }


def _contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id → function name: functionResponse wants the name
    for message in messages:
        role = message["role"]
        if role in SYSTEM_ROLES:
            continue
        parts = _parts(message.get("content"))
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                names[str(call.get("id"))] = str(function.get("name"))
                call_part = {"name": function.get("name"), "args": tool_arguments(call)}
                parts.append({"functionCall": call_part})
        elif role == "tool":
            parts = [_function_response(message, names)]
        gemini_role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return contents


def _parts(content: Any) -> list[dict[str, Any]]:
    # Gemini refuses empty text parts, which OpenAI clients send next to tool calls.
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            if part.get(kind):
                parts.append({"text": part[kind]})
        elif kind == "image_url":
            parts.append(_image(part.get("image_url")))
        else:
            raise unsupported("Gemini", f"content part type '{kind}'")
    return parts


def _image(image_url: Any) -> dict[str, Any]:
    url = str((image_url.get("url") if isinstance(image_url, dict) else image_url) or "")
    data = data_url(url)
    if data:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    extension = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    if url.startswith(("http://", "https://")) and extension in _IMAGE_TYPES:
        return {"fileData": {"mimeType": f"image/{_IMAGE_TYPES[extension]}", "fileUri": url}}
    raise unsupported("Gemini", "an image URL that is neither base64 data nor a known image type")


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if call_id not in names:
        # OpenAI refuses this too: a tool result must answer an earlier call.
        raise ProviderError(
            kind=FailureKind.REJECTED,
            message=f"Tool result '{call_id}' answers no earlier assistant tool call.",
            code="bad_request",
        )
    text = content_text(message.get("content"))
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": names[call_id], "response": response}}


def _declaration(function: dict[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    if choice in TOOL_MODES:
        return {"mode": TOOL_MODES[choice]}
    return None
