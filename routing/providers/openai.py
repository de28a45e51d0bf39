"""The OpenAI Chat Completions protocol (OpenAI itself, and AIMLAPI which speaks it).

This adapter is on the hot path of every request, and our canonical format *is*
this protocol, so it translates as little as possible:

- request: the client's params as sent, plus `model` (the deployment's name) and
  `messages`; `metadata` is never forwarded (it is ours, for routing and billing).
- 2xx body: one `orjson.loads` to validate it and read usage, then the upstream
  bytes go to the client unchanged.
- stream: each upstream `data:` payload is forwarded as the same bytes.

| OpenAI request / response            | here                                            |
|--------------------------------------|-------------------------------------------------|
| all params in `ChatRequest.params`   | forwarded unchanged                             |
| `stream: true`                       | plus `stream_options: {"include_usage": true}`  |
|                                      | always: we bill from usage the client may not   |
|                                      | have asked for                                  |
| usage-only chunk (`choices: []`)     | captured into `usage`, not forwarded (the       |
|                                      | engine writes its own when the client asked)    |
| `data: [DONE]`                       | end marker, not forwarded (the engine writes    |
|                                      | it); missing → TRANSIENT `stream_incomplete`    |
| `finish_reason`                      | passed through (already OpenAI's)               |
| `usage.prompt_tokens`                | `Usage.prompt_tokens`                           |
| `usage.completion_tokens`            | `Usage.completion_tokens`                       |
| `usage.prompt_tokens_details`        | `Usage.cached_tokens`                           |
|   `.cached_tokens`                   |                                                 |

Errors. OpenAI sends `{"error": {"message", "type", "param", "code"}}`; AIMLAPI
sends `{"message", "path", "requestId", "statusCode", "timestamp"}` (statusCode a
number or a string). Both are read here:

| status / body                                  | kind      | code                     |
|------------------------------------------------|-----------|--------------------------|
| 429 with code/type `insufficient_quota`        | PERMANENT | insufficient_quota       |
| AIMLAPI 403 (out of credits, plan limit)       | PERMANENT | no_credit                |
| 400 `context_length_exceeded` or a message     | REJECTED  | context_length_exceeded  |
|   about the maximum context length             |           |                          |
| 401                                            | PERMANENT | invalid_api_key          |
| 404                                            | PERMANENT | model_not_found          |
| 429                                            | TRANSIENT | rate_limited (+ retry)   |
| 5xx                                            | TRANSIENT | upstream_error           |
| anything else, or a body that is not JSON      | base `Adapter.classify` by status    |
| `error` object inside a stream (no status)     | TRANSIENT unless its code/type says  |
|                                                | quota, auth or bad request           |

`x-should-retry: false` does not change the kind: it is the SDK's hint about
re-sending the same request to the same host, while our answer to a TRANSIENT
failure is mostly to fall back elsewhere; making it PERMANENT would open the
breaker on a per-request signal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from routing.providers.base import (
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
    default_code,
    error_json,
    go_duration,
    header_int,
    loads_object,
    malformed,
    retry_after_seconds,
    scrub_secrets,
    stream_incomplete,
)
from routing.providers.sse import SSEEvent
from routing.schema import ChatRequest

DONE = b"[DONE]"
_CONTEXT_MESSAGE = re.compile(r"maximum context length|context window|context_length", re.I)
# Without an HTTP status (an error inside a 200 stream) only the error's type says who is at fault.
_KIND_BY_TYPE = {
    "invalid_request_error": (FailureKind.REJECTED, "bad_request"),
    "authentication_error": (FailureKind.PERMANENT, "invalid_api_key"),
    "permission_error": (FailureKind.PERMANENT, "forbidden"),
}


class OpenAIAdapter(Adapter):
    protocol = "openai"

    def chat_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        body: dict[str, Any] = {"model": target.model, "messages": request.messages}
        body.update(request.params)
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return UpstreamRequest(
            url=f"{target.base_url.rstrip('/')}/chat/completions",
            headers={
                "Authorization": f"Bearer {target.api_key}",
                "Content-Type": "application/json",
            },
            body=orjson.dumps(body),
        )

    def parse_completion(self, target: Target, request: ChatRequest, body: bytes) -> Completion:
        data = loads_object(target.provider, body)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            # Some compatible servers answer 200 with an error envelope instead of a status.
            error = error_from_body(None, {}, data)
            if error is not None:
                raise error
            raise malformed(target.provider, "no choices in the completion")
        choice = choices[0]
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return Completion(
            body=body,
            usage=read_usage(data.get("usage")) or Usage(),
            finish_reason=choice.get("finish_reason") or "stop",
            text=content if isinstance(content, str) else "",
        )

    def stream_translator(self, target: Target, request: ChatRequest) -> StreamTranslator:
        return OpenAIStream(request=request, target=target)

    def quota(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> Quota | None:
        return rate_limit_headers(headers) or super().quota(status, headers, body)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        data = error_json(body)
        error = error_from_body(status, headers, data) if isinstance(data, dict) else None
        return error if error is not None else super().classify(status, headers, body)


def rate_limit_headers(headers: Mapping[str, str]) -> Quota | None:
    """OpenAI's `x-ratelimit-*` headers (resets are Go durations); AIMLAPI sends none."""
    if "x-ratelimit-remaining-requests" not in headers and (
        "x-ratelimit-remaining-tokens" not in headers
    ):
        return None
    quota = Quota(
        requests_limit=header_int(headers, "x-ratelimit-limit-requests"),
        requests_remaining=header_int(headers, "x-ratelimit-remaining-requests"),
        requests_reset=go_duration(headers.get("x-ratelimit-reset-requests")),
        tokens_limit=header_int(headers, "x-ratelimit-limit-tokens"),
        tokens_remaining=header_int(headers, "x-ratelimit-remaining-tokens"),
        tokens_reset=go_duration(headers.get("x-ratelimit-reset-tokens")),
    )
    return None if quota == Quota() else quota


@dataclass
class OpenAIStream(StreamTranslator):
    done: bool = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        if event.data == DONE:
            self.done = True
            return []
        data = loads_object(self.target.provider, event.data)
        if "error" in data or "choices" not in data:
            error = error_from_body(None, {}, data)
            if error is not None:
                raise error
        if not self.chunk_id:
            self.chunk_id = str(data.get("id") or "")
            created = data.get("created")
            self.created = created if isinstance(created, int) else 0
        usage = read_usage(data.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = data.get("choices")
        if not choices:
            return [] if usage is not None else [event.data]
        choice = choices[0]
        if isinstance(choice, dict):
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self.text_parts.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return [event.data]

    def finish(self) -> list[bytes]:
        if not self.done:
            raise stream_incomplete(self.target.provider, "[DONE]")
        return []


def read_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(cached or 0),
    )


def error_from_body(
    status: int | None, headers: Mapping[str, str], data: dict[str, Any]
) -> ProviderError | None:
    """Read OpenAI's or AIMLAPI's error body; None when `data` is neither."""
    error = data.get("error")
    if isinstance(error, dict):
        return _openai_error(status, headers, error)
    if isinstance(error, str) and error:
        return _openai_error(status, headers, {"message": error})
    if "message" in data and ("statusCode" in data or "requestId" in data):
        return _aimlapi_error(status, headers, data)
    return None


def _openai_error(
    status: int | None, headers: Mapping[str, str], error: dict[str, Any]
) -> ProviderError:
    message = _message(error.get("message"), status)
    code = str(error.get("code") or "")
    error_type = str(error.get("type") or "")
    if "insufficient_quota" in (code, error_type):
        kind, code = FailureKind.PERMANENT, "insufficient_quota"
    elif status in (None, 400, 413, 422) and (
        code == "context_length_exceeded" or _CONTEXT_MESSAGE.search(message)
    ):
        kind, code = FailureKind.REJECTED, "context_length_exceeded"
    elif status == 401 or code == "invalid_api_key":
        kind, code = FailureKind.PERMANENT, "invalid_api_key"
    elif status is None:
        kind, default = _KIND_BY_TYPE.get(error_type, (FailureKind.TRANSIENT, "stream_error"))
        code = code or default
    else:
        kind, code = classify_status(status), default_code(status)
    return ProviderError(
        kind=kind,
        message=message,
        status=status,
        code=code,
        retry_after=retry_after_seconds(headers),
    )


def _aimlapi_error(
    status: int | None, headers: Mapping[str, str], data: dict[str, Any]
) -> ProviderError:
    # Their own example sends statusCode as a string ("429"); it only matters inside a stream.
    try:
        effective = status or int(data.get("statusCode") or 0) or None
    except (TypeError, ValueError):
        effective = None
    message = _message(data.get("message"), effective)
    if effective == 403:
        kind, code = FailureKind.PERMANENT, "no_credit"
    elif effective in (None, 400, 413, 422) and _CONTEXT_MESSAGE.search(message):
        kind, code = FailureKind.REJECTED, "context_length_exceeded"
    elif effective is None:
        kind, code = FailureKind.TRANSIENT, "stream_error"
    else:
        kind, code = classify_status(effective), default_code(effective)
    return ProviderError(
        kind=kind,
        message=message,
        status=status,
        code=code,
        retry_after=retry_after_seconds(headers),
    )


def _message(value: Any, status: int | None) -> str:
    # AIMLAPI's body validation errors may carry a list of messages (NestJS style).
    if isinstance(value, list):
        value = "; ".join(str(item) for item in value)
    text = str(value or "").strip()
    return scrub_secrets(text) if text else f"HTTP {status}" if status else "upstream error"
