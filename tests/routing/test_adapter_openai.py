from __future__ import annotations

from typing import Any

import orjson
import pytest

from routing.providers import ADAPTERS, adapter_for
from routing.providers.anthropic import AnthropicAdapter
from routing.providers.base import FailureKind, ProviderError, StreamTranslator, Target
from routing.providers.gemini import GeminiAdapter
from routing.providers.openai import OpenAIAdapter
from routing.providers.sse import SSEDecoder
from routing.schema import ChatRequest, validate_chat_body

ADAPTER = OpenAIAdapter()
KEY = "sk-proj-abcdefghijklmnop0123456789"
TARGET = Target(
    provider="openai", base_url="https://api.openai.com/v1/", model="gpt-4o-mini", api_key=KEY
)
AIMLAPI = Target(
    provider="aimlapi", base_url="https://api.aimlapi.com/v1", model="gpt-4o", api_key="k"
)
HELLO = [{"role": "user", "content": "Hello"}]


def make_request(**body: Any) -> ChatRequest:
    return validate_chat_body({"model": "summary", "messages": HELLO, **body})


def sent(request: ChatRequest, target: Target = TARGET) -> dict[str, Any]:
    return orjson.loads(ADAPTER.chat_request(target, request).body)


def run_stream(translator: StreamTranslator, raw: bytes) -> list[bytes]:
    """Feed raw SSE bytes in awkward 7-byte reads, as a network would."""
    decoder, payloads = SSEDecoder(), []
    for start in range(0, len(raw), 7):
        for event in decoder.feed(raw[start : start + 7]):
            payloads += translator.feed(event)
    for event in decoder.flush():
        payloads += translator.feed(event)
    return payloads + translator.finish()


def test_the_registry_has_one_adapter_per_protocol() -> None:
    assert isinstance(adapter_for("openai"), OpenAIAdapter)
    assert isinstance(adapter_for("anthropic"), AnthropicAdapter)
    assert isinstance(adapter_for("gemini"), GeminiAdapter)
    assert sorted(ADAPTERS) == ["anthropic", "gemini", "openai"]


def test_an_unknown_protocol_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'cohere'"):
        adapter_for("cohere")


def test_it_posts_to_chat_completions_with_a_bearer_key() -> None:
    upstream = ADAPTER.chat_request(TARGET, make_request())
    assert upstream.url == "https://api.openai.com/v1/chat/completions"
    assert upstream.headers["Authorization"] == f"Bearer {KEY}"
    assert upstream.headers["Content-Type"] == "application/json"


def test_it_sends_the_deployment_model_and_the_messages_as_sent() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another?"},
    ]
    body = sent(make_request(messages=messages), AIMLAPI)
    assert body["model"] == "gpt-4o"
    assert body["messages"] == messages
    assert "stream" not in body
    assert "stream_options" not in body


def test_it_forwards_the_clients_params_unchanged() -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    params = {
        "temperature": 1.5,
        "top_p": 0.9,
        "max_tokens": 64,
        "max_completion_tokens": 128,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
        "tools": tools,
        "tool_choice": "required",
        "user": "u-1",
        "seed": 7,
    }
    body = sent(make_request(**params))
    assert {name: body[name] for name in params} == params


def test_it_never_forwards_metadata() -> None:
    assert "metadata" not in sent(make_request(metadata={"team": "search"}))


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}])
def test_a_stream_always_asks_for_usage(stream_options: dict[str, Any] | None) -> None:
    extra = {"stream_options": stream_options} if stream_options else {}
    body = sent(make_request(stream=True, **extra))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


COMPLETION = (
    b'{"id": "chatcmpl-abc", "object": "chat.completion", "created": 1735689600,\n'
    b' "model": "gpt-4o-2024-08-06",\n'
    b' "choices": [{"index": 0, "message": {"role": "assistant", "content": "7", "refusal": null},'
    b' "finish_reason": "stop", "logprobs": null}],\n'
    b' "usage": {"prompt_tokens": 21, "completion_tokens": 1, "total_tokens": 22,'
    b' "prompt_tokens_details": {"cached_tokens": 16}}}'
)


def test_a_completion_body_is_passed_through_as_the_same_bytes() -> None:
    completion = ADAPTER.parse_completion(TARGET, make_request(), COMPLETION)
    assert completion.body is COMPLETION
    assert completion.text == "7"
    assert completion.finish_reason == "stop"


def test_a_completion_reports_its_usage_with_cached_tokens() -> None:
    usage = ADAPTER.parse_completion(TARGET, make_request(), COMPLETION).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (21, 1, 16)


def test_a_tool_call_completion_has_no_text_and_finishes_with_tool_calls() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    body = orjson.dumps({"choices": [{"message": message, "finish_reason": "tool_calls"}]})
    completion = ADAPTER.parse_completion(TARGET, make_request(), body)
    assert (completion.text, completion.finish_reason) == ("", "tool_calls")
    assert completion.usage.total_tokens == 0


@pytest.mark.parametrize(
    "body",
    [b"<html>502</html>", b"[]", b'"text"', b'{"object": "chat.completion"}', b'{"choices": []}'],
)
def test_a_malformed_completion_is_a_transient_failure(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_completion(TARGET, make_request(), body)
    assert caught.value.kind == FailureKind.TRANSIENT
    assert caught.value.code == "malformed_response"


def test_an_error_envelope_in_a_200_body_is_classified_by_its_code() -> None:
    body = (
        b'{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'
    )
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_completion(AIMLAPI, make_request(), body)
    assert (caught.value.kind, caught.value.code) == (FailureKind.PERMANENT, "insufficient_quota")


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": "gpt-4o",
            "choices": [choice],
            "usage": None,
        }
    )


USAGE_CHUNK = (
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1735689600,"model":"gpt-4o",'
    b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,'
    b'"prompt_tokens_details":{"cached_tokens":4}}}'
)
TEXT_CHUNKS = [
    chunk({"role": "assistant", "content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
]


def sse(*payloads: bytes) -> bytes:
    return b"".join(b"data: " + payload + b"\n\n" for payload in payloads)


def test_stream_payloads_are_forwarded_as_the_same_bytes() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    payloads = run_stream(translator, sse(*TEXT_CHUNKS, USAGE_CHUNK, b"[DONE]"))
    assert payloads == TEXT_CHUNKS
    assert translator.text == "Hello"
    assert translator.finish_reason == "stop"
    assert (translator.chunk_id, translator.created) == ("chatcmpl-1", 1735689600)


def test_the_usage_chunk_is_captured_not_forwarded() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    payloads = run_stream(translator, sse(*TEXT_CHUNKS, USAGE_CHUNK, b"[DONE]"))
    assert USAGE_CHUNK not in payloads
    assert translator.usage is not None
    usage = translator.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (9, 2, 4)


def test_a_streamed_tool_call_is_forwarded_and_finishes_with_tool_calls() -> None:
    start = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f"}}
    chunks = [
        chunk({"role": "assistant", "tool_calls": [start]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}),
        chunk({}, "tool_calls"),
    ]
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    assert run_stream(translator, sse(*chunks, b"[DONE]")) == chunks
    assert translator.finish_reason == "tool_calls"
    assert translator.usage is None


def test_a_stream_cut_before_done_is_incomplete() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    with pytest.raises(ProviderError) as caught:
        run_stream(translator, sse(*TEXT_CHUNKS))
    assert (caught.value.kind, caught.value.code) == (FailureKind.TRANSIENT, "stream_incomplete")


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (
            {"message": "The server had an error", "type": "server_error"},
            "transient",
            "stream_error",
        ),
        ({"message": "quota", "code": "insufficient_quota"}, "permanent", "insufficient_quota"),
        (
            {"message": "This model's maximum context length is 128000 tokens."},
            "rejected",
            "context_length_exceeded",
        ),
        ({"message": "bad", "type": "invalid_request_error"}, "rejected", "bad_request"),
    ],
)
def test_an_error_object_inside_a_stream_raises(
    error: dict[str, Any], kind: str, code: str
) -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    raw = sse(TEXT_CHUNKS[0], orjson.dumps({"error": error}))
    with pytest.raises(ProviderError) as caught:
        run_stream(translator, raw)
    assert (caught.value.kind, caught.value.code) == (kind, code)
    assert caught.value.message == error["message"]


def openai_error(message: str, type_: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def aimlapi_error(message: str, status: int | str) -> bytes:
    return orjson.dumps(
        {
            "message": message,
            "path": "/v1/chat/completions",
            "requestId": "5b1c0c7e-0000-4000-8000-000000000000",
            "statusCode": status,
            "timestamp": "2025-06-01T12:00:00.000Z",
        }
    )


QUOTA = "You exceeded your current quota, please check your plan and billing details."
CREDITS = "You've run out of credits. Please top up your balance."
CONTEXT = "This model's maximum context length is 128000 tokens. However, you requested 130000."


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code", "retry_after"),
    [
        (429, openai_error(QUOTA, "insufficient_quota", "insufficient_quota"), {}, "permanent",
         "insufficient_quota", None),
        (429, openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
         {"retry-after": "7"}, "transient", "rate_limited", 7.0),
        (429, openai_error("Slow down", "requests"), {"retry-after-ms": "1500"}, "transient",
         "rate_limited", 1.5),
        (400, openai_error("too long", "invalid_request_error", "context_length_exceeded"), {},
         "rejected", "context_length_exceeded", None),
        (400, openai_error(CONTEXT, "invalid_request_error"), {}, "rejected",
         "context_length_exceeded", None),
        (400, openai_error("Invalid 'messages'", "invalid_request_error"), {}, "rejected",
         "bad_request", None),
        (401, openai_error("Incorrect API key", "invalid_request_error", "invalid_api_key"), {},
         "permanent", "invalid_api_key", None),
        (403, openai_error("Country not supported", "request_forbidden"), {}, "permanent",
         "forbidden", None),
        (404, openai_error("The model `gpt-9` does not exist", "invalid_request_error",
                           "model_not_found"), {}, "permanent", "model_not_found", None),
        (500, openai_error("The server had an error", "server_error"), {}, "transient",
         "upstream_error", None),
        (503, openai_error("overloaded", "service_unavailable_error"), {"x-should-retry": "false"},
         "transient", "upstream_error", None),
        (403, aimlapi_error(CREDITS, 403), {}, "permanent", "no_credit", None),
        (403, aimlapi_error("Plan limit reached", "403"), {}, "permanent", "no_credit", None),
        (429, aimlapi_error("Too Many Requests", "429"), {}, "transient", "rate_limited", None),
        (400, aimlapi_error("Body validation error!", 400), {}, "rejected", "bad_request", None),
        (401, aimlapi_error("Invalid API key", 401), {}, "permanent", "invalid_api_key", None),
        (503, aimlapi_error("Model under maintenance", 503), {}, "transient", "upstream_error",
         None),
        (502, b"<html>Bad gateway</html>", {}, "transient", "upstream_error", None),
        (404, b"", {}, "permanent", "model_not_found", None),
    ],
)  # fmt: skip
def test_errors_are_classified_by_status_and_body(
    status: int,
    body: bytes,
    headers: dict[str, str],
    kind: str,
    code: str,
    retry_after: float | None,
) -> None:
    error = ADAPTER.classify(status, headers, body)
    assert (error.kind, error.code, error.status) == (kind, code, status)
    assert error.retry_after == retry_after


def test_the_error_message_is_the_providers_own() -> None:
    error = ADAPTER.classify(429, {}, openai_error(QUOTA, "insufficient_quota"))
    assert error.message == QUOTA
    assert ADAPTER.classify(403, {}, aimlapi_error(CREDITS, 403)).message == CREDITS


def test_an_api_key_echoed_in_an_error_message_is_masked() -> None:
    body = openai_error(f"Incorrect API key provided: {KEY}.", "invalid_request_error")
    error = ADAPTER.classify(401, {}, body)
    assert KEY not in error.message
    assert KEY not in str(error)
    assert error.message.startswith("Incorrect API key provided: ")
