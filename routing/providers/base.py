"""What every provider adapter is: pure translation plus error classification.

An adapter turns our canonical request (the OpenAI chat format, validated by
`routing.schema`) into its protocol's HTTP request, and the protocol's answer
back into OpenAI's format. It never does I/O and never touches the database;
`routing.http` sends what it builds and `routing.engine` decides what to do
with the `ProviderError` it classifies.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import orjson

from routing.providers.sse import SSEEvent
from routing.schema import ChatRequest


class FailureKind(StrEnum):
    # Worth retrying here, then falling back (429, 5xx, 529, timeouts, resets, bad bodies).
    TRANSIENT = "transient"
    # This provider cannot serve anyone now (bad key, no credit, unknown model):
    # no retry, fall back at once, and the breaker opens.
    PERMANENT = "permanent"
    # This provider refuses this request (400, context window): the next
    # candidate may take it; not the provider's fault, so the breaker ignores it.
    REJECTED = "rejected"


@dataclass
class ProviderError(Exception):
    kind: FailureKind
    message: str
    status: int | None = None  # the upstream HTTP status; None for transport failures
    code: str = ""  # short machine name: timeout, connect, rate_limited, no_credit, ...
    retry_after: float | None = None  # seconds the provider asked us to wait

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.kind}{status} {self.code}: {self.message}"


@dataclass(frozen=True)
class Target:
    """One deployment as an adapter needs it: where, which model, which key."""

    provider: str
    base_url: str
    model: str
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # part of prompt_tokens read from the provider's prompt cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


@dataclass(frozen=True)
class Quota:
    """What a provider says is left of its rate limits, in one shape for every protocol.

    None where the provider does not say. Resets are seconds from now until that
    quota is whole again. `routing.limits` decides what "nearly spent" means.
    """

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None


@dataclass
class Completion:
    """A whole answer: the OpenAI `chat.completion` JSON to send, and what it used."""

    body: bytes
    usage: Usage
    finish_reason: str
    text: str = ""  # the answer's text, for quality checks and caching later


@dataclass
class StreamTranslator:
    """Turns one upstream stream into OpenAI `chat.completion.chunk` JSON payloads.

    `feed` gets each SSE event in order and returns zero or more payloads
    (already serialised JSON, without the `data: ` framing). It raises
    `ProviderError` for an error event inside the stream. `finish` is called
    when the upstream body ends: it returns the closing payloads (the finish
    chunk if not sent yet) and raises a TRANSIENT `ProviderError` if the stream
    ended without its protocol's end marker. The usage chunk is not a payload:
    the engine writes it from `usage` when the client asked for it.
    """

    request: ChatRequest
    target: Target
    usage: Usage | None = None
    finish_reason: str | None = None
    text_parts: list[str] = field(default_factory=list)
    # Identity of the chunks sent, so the engine's own usage or error chunk matches them.
    chunk_id: str = ""
    created: int = 0

    def feed(self, event: SSEEvent) -> list[bytes]:
        raise NotImplementedError

    def finish(self) -> list[bytes]:
        raise NotImplementedError

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        """One OpenAI `chat.completion.chunk` payload carrying this stream's identity."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return orjson.dumps(
            {
                "id": self.chunk_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.target.model,
                "choices": [choice],
            }
        )


class Adapter:
    """Base class of the protocol adapters; `routing.providers.ADAPTERS` has one of each."""

    protocol: ClassVar[str]

    def chat_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        """The HTTP request for `request` (streamed if `request.stream`)."""
        raise NotImplementedError

    def parse_completion(self, target: Target, request: ChatRequest, body: bytes) -> Completion:
        """A 2xx non-stream body as an OpenAI completion. Raises TRANSIENT on a malformed body."""
        raise NotImplementedError

    def stream_translator(self, target: Target, request: ChatRequest) -> StreamTranslator:
        raise NotImplementedError

    def quota(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> Quota | None:
        """What an answer says of the provider's rate limits; None when it says nothing.

        ``body`` is given for error answers only (Gemini puts its retry hint there).
        Protocols without rate-limit headers still report a 429 as a spent quota.
        """
        if status != 429:
            return None
        return Quota(requests_remaining=0, requests_reset=retry_after_seconds(headers))

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """What a non-2xx answer means. Subclasses read their error body, then defer here."""
        return ProviderError(
            kind=classify_status(status),
            message=f"HTTP {status}",
            status=status,
            code=default_code(status),
            retry_after=retry_after_seconds(headers),
        )


def classify_status(status: int) -> FailureKind:
    if status in (408, 409, 425, 429) or status >= 500:
        return FailureKind.TRANSIENT
    if status in (401, 402, 403, 404):
        return FailureKind.PERMANENT
    return FailureKind.REJECTED


def default_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "invalid_api_key",
        402: "payment_required",
        403: "forbidden",
        404: "model_not_found",
        408: "timeout",
        413: "request_too_large",
        429: "rate_limited",
        529: "overloaded",
    }.get(status, "upstream_error" if status >= 500 else f"http_{status}")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Read `retry-after-ms`, then `retry-after` (seconds or an HTTP date), as the SDKs do."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(value: str | None) -> float | None:
    """Seconds in a Go-style duration (``6m0s``, ``12ms``, ``1.5s``), as OpenAI sends resets."""
    if not value:
        return None
    value = value.strip()
    try:  # the common shapes, without the regular expression (this runs on every answer)
        if value.endswith("ms"):
            return float(value[:-2]) / 1000
        if value.endswith("s") and "m" not in value and "h" not in value and "u" not in value:
            return float(value[:-1])
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        try:
            return max(0.0, float(value))  # a bare number: seconds
        except ValueError:
            return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def malformed(provider: str, detail: str) -> ProviderError:
    return ProviderError(
        kind=FailureKind.TRANSIENT,
        message=f"{provider} sent a malformed response: {detail}",
        code="malformed_response",
    )


def loads_object(provider: str, raw: bytes) -> dict[str, Any]:
    """Parse a JSON object from a provider, or raise a TRANSIENT malformed-body error."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise malformed(provider, f"invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise malformed(provider, "expected a JSON object")
    return value


def error_json(body: bytes) -> Any:
    """An error body's JSON, or None: error bodies are often HTML from a proxy, or empty."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def translated_completion(
    *,
    completion_id: str,
    model: str,
    text: str,
    tool_calls: list[dict[str, Any]],
    finish_reason: str,
    usage: Usage,
) -> Completion:
    """An OpenAI `chat.completion`, for adapters whose protocol is not OpenAI's."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["refusal"] = None
    body = orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
            ],
            "usage": usage.as_openai(),
        }
    )
    return Completion(body=body, usage=usage, finish_reason=finish_reason, text=text)


# Providers echo credentials back in some error messages (OpenAI masks most of the key,
# proxies and compatible servers may not); these shapes must never reach logs or clients.
_SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{6,}|AIza[0-9A-Za-z_-]{20,})|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{20,}"
)


def scrub_secrets(message: str, limit: int = 1000) -> str:
    """A provider's own error message, with anything shaped like an API key masked."""
    return _SECRET.sub("[redacted]", message)[:limit]


def stream_incomplete(provider: str, missing: str) -> ProviderError:
    return ProviderError(
        kind=FailureKind.TRANSIENT,
        message=f"{provider} stream ended without {missing}",
        code="stream_incomplete",
    )


def unsupported(provider: str, what: str) -> ProviderError:
    # REJECTED, not PERMANENT: another candidate may accept what this protocol cannot.
    return ProviderError(
        kind=FailureKind.REJECTED,
        message=f"{provider} cannot take {what}.",
        code="unsupported_content",
    )


SYSTEM_ROLES = ("system", "developer")
_DATA_URL = re.compile(r"data:([^;,]+)(?:;[^,;]*)*;base64,(.*)", re.S)


def content_text(content: Any) -> str:
    """The text of an OpenAI message's content, a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if p.get("type") == "text")
    return ""


def system_prompt(messages: list[dict[str, Any]]) -> str:
    """The system and developer messages, for protocols that take them apart from the turns."""
    texts = (content_text(m.get("content")) for m in messages if m["role"] in SYSTEM_ROLES)
    return "\n\n".join(text for text in texts if text)


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:...;base64,` URL, else None."""
    match = _DATA_URL.fullmatch(url)
    return (match[1], match[2]) if match else None


def tool_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call's arguments as the object Anthropic and Gemini want."""
    try:
        arguments = orjson.loads((call.get("function") or {}).get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    # A garbled call from an earlier turn is replayed without arguments: refusing it would
    # make the whole conversation unservable by this provider.
    return arguments if isinstance(arguments, dict) else {}
