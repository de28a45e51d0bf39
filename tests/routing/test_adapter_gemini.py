from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from routing.providers.base import FailureKind, ProviderError, StreamTranslator, Target
from routing.providers.gemini import GeminiAdapter
from routing.providers.sse import SSEDecoder
from routing.schema import ChatRequest, validate_chat_body

ADAPTER = GeminiAdapter()
KEY = "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"
TARGET = Target(
    provider="google",
    base_url="https://generativelanguage.googleapis.com/v1beta/",
    model="gemini-2.5-flash",
    api_key=KEY,
)
HELLO = [{"role": "user", "content": "Hello"}]
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}},
            "additionalProperties": False,
        },
    },
}
CALL = {"id": "call_0_x", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
TOOL_CALL_ID = re.compile(r"call_\d+_[0-9a-f]+")


def make_request(**body: Any) -> ChatRequest:
    return validate_chat_body({"model": "summary", "messages": HELLO, **body})


def sent(request: ChatRequest) -> dict[str, Any]:
    return orjson.loads(ADAPTER.chat_request(TARGET, request).body)


def run_stream(translator: StreamTranslator, raw: bytes) -> list[dict[str, Any]]:
    """Feed raw SSE bytes in awkward 7-byte reads; the chunks come back parsed."""
    decoder, payloads = SSEDecoder(), []
    for start in range(0, len(raw), 7):
        for event in decoder.feed(raw[start : start + 7]):
            payloads += translator.feed(event)
    for event in decoder.flush():
        payloads += translator.feed(event)
    return [orjson.loads(payload) for payload in payloads + translator.finish()]


def test_it_posts_to_generate_content_with_the_key_header() -> None:
    upstream = ADAPTER.chat_request(TARGET, make_request())
    assert upstream.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert upstream.headers == {"x-goog-api-key": KEY, "content-type": "application/json"}
    assert KEY not in upstream.url
    body = orjson.loads(upstream.body)
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


def test_a_stream_posts_to_stream_generate_content_as_sse() -> None:
    upstream = ADAPTER.chat_request(TARGET, make_request(stream=True))
    assert upstream.url.endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert "stream" not in orjson.loads(upstream.body)


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in French."},
        *HELLO,
    ]
    body = sent(make_request(messages=messages))
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in French."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]


def test_assistant_turns_become_model_turns_and_same_role_turns_merge() -> None:
    messages = [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another?"},
        {"role": "user", "content": [{"type": "text", "text": "An even one."}]},
    ]
    assert sent(make_request(messages=messages))["contents"] == [
        {"role": "user", "parts": [{"text": "Name a prime."}]},
        {"role": "model", "parts": [{"text": "7"}]},
        {"role": "user", "parts": [{"text": "Another?"}, {"text": "An even one."}]},
    ]


def test_image_parts_become_inline_data_or_file_data() -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=2"}},
    ]
    parts = sent(make_request(messages=[{"role": "user", "content": content}]))["contents"][0]
    assert parts["parts"] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=2"}},
    ]


def test_an_image_url_of_unknown_type_is_rejected_for_this_provider_only() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/render?id=3"}}
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_request(TARGET, make_request(messages=[{"role": "user", "content": [image]}]))
    assert (caught.value.kind, caught.value.code) == (FailureKind.REJECTED, "unsupported_content")


def test_sampling_params_go_in_the_generation_config() -> None:
    body = sent(make_request(temperature=1.5, top_p=0.9, max_tokens=64, stop="END", seed=7))
    assert body["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.9,
        "seed": 7,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    body = sent(make_request(max_tokens=64, max_completion_tokens=128))
    assert body["generationConfig"] == {"maxOutputTokens": 128}


def test_json_object_mode_asks_for_a_json_mime_type() -> None:
    body = sent(make_request(response_format={"type": "json_object"}))
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_a_json_schema_is_sent_as_the_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    body = sent(make_request(response_format=response_format))
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


def test_tools_become_function_declarations_with_a_json_schema() -> None:
    body = sent(make_request(tools=[ADD_TOOL, {"type": "function", "function": {"name": "now"}}]))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "add",
                    "description": "Add two numbers.",
                    "parametersJsonSchema": ADD_TOOL["function"]["parameters"],
                },
                {"name": "now"},
            ]
        }
    ]
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "add"}},
            {"mode": "ANY", "allowedFunctionNames": ["add"]},
        ),
    ],
)
def test_tool_choice_becomes_a_function_calling_config(
    tool_choice: Any, expected: dict[str, Any]
) -> None:
    body = sent(make_request(tools=[ADD_TOOL], tool_choice=tool_choice))
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_calls_and_results_become_function_calls_and_responses() -> None:
    second = {"id": "call_1_y", "type": "function", "function": {"name": "now", "arguments": ""}}
    messages = [
        {"role": "user", "content": "What is 2 + 0, and when?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "call_0_x", "content": "2"},
        {"role": "tool", "tool_call_id": "call_1_y", "content": '{"time": "noon"}'},
    ]
    assert sent(make_request(messages=messages, tools=[ADD_TOOL]))["contents"] == [
        {"role": "user", "parts": [{"text": "What is 2 + 0, and when?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "add", "args": {"a": 2}}},
                {"functionCall": {"name": "now", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "add", "response": {"result": "2"}}},
                {"functionResponse": {"name": "now", "response": {"time": "noon"}}},
            ],
        },
    ]


def test_a_tool_result_for_no_earlier_call_is_rejected() -> None:
    messages = [*HELLO, {"role": "tool", "tool_call_id": "call_missing", "content": "2"}]
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_request(TARGET, make_request(messages=messages))
    assert caught.value.kind == FailureKind.REJECTED


def response(parts: list[dict[str, Any]], finish: str = "STOP", **usage: int) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 14, "candidatesTokenCount": 1, **usage},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc123",
    }


def parse(data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    completion = ADAPTER.parse_completion(TARGET, make_request(), orjson.dumps(data))
    return completion, orjson.loads(completion.body)


def test_a_gemini_response_becomes_an_openai_completion() -> None:
    completion, body = parse(response([{"text": "4"}]))
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-abc123"
    assert body["model"] == "gemini-2.5-flash"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "4", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 14, "completion_tokens": 1, "total_tokens": 15}
    assert (completion.text, completion.finish_reason) == ("4", "stop")


def test_thought_parts_are_not_part_of_the_answer() -> None:
    completion, _ = parse(response([{"text": "Hmm, 2+2...", "thought": True}, {"text": "4"}]))
    assert completion.text == "4"


def test_a_gemini_function_call_becomes_an_openai_tool_call_with_a_generated_id() -> None:
    parts = [
        {"functionCall": {"name": "add", "args": {"a": 2}}},
        {"functionCall": {"name": "now", "args": {}}},
    ]
    completion, body = parse(response(parts))
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert [call["function"] for call in message["tool_calls"]] == [
        {"name": "add", "arguments": '{"a":2}'},
        {"name": "now", "arguments": "{}"},
    ]
    ids = [call["id"] for call in message["tool_calls"]]
    assert all(TOOL_CALL_ID.fullmatch(call_id) for call_id in ids)
    assert len(set(ids)) == 2
    assert {call["type"] for call in message["tool_calls"]} == {"function"}
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("LANGUAGE", "stop"),
    ],
)
def test_finish_reasons_map_to_openai_finish_reasons(gemini: str, openai: str) -> None:
    completion, _ = parse(response([{"text": "x"}], gemini))
    assert completion.finish_reason == openai


def test_a_blocked_prompt_is_an_empty_content_filtered_answer() -> None:
    data = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    completion, body = parse(data)
    assert body["choices"][0]["message"]["content"] is None
    assert completion.finish_reason == "content_filter"
    assert (completion.text, completion.usage.prompt_tokens) == ("", 9)


def test_thinking_tokens_count_as_completion_and_cached_content_as_cached() -> None:
    usage = {"thoughtsTokenCount": 30, "cachedContentTokenCount": 10, "totalTokenCount": 45}
    completion, body = parse(response([{"text": "4"}], **usage))
    tokens = completion.usage
    assert (tokens.prompt_tokens, tokens.completion_tokens, tokens.cached_tokens) == (14, 31, 10)
    assert body["usage"]["total_tokens"] == 45


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"modelVersion": "gemini-2.5-flash"}'])
def test_a_malformed_response_is_a_transient_failure(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_completion(TARGET, make_request(), body)
    assert (caught.value.kind, caught.value.code) == (FailureKind.TRANSIENT, "malformed_response")


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks)


def stream_chunk(
    parts: list[dict[str, Any]], finish: str | None = None, candidates: int = 1
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 14, "candidatesTokenCount": candidates},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }


def test_a_text_stream_becomes_openai_chunks_with_the_finish_chunk_last() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    raw = sse(
        stream_chunk([{"text": "The answer"}], candidates=2),
        # Some models say STOP before the stream is over; the text after it still counts.
        stream_chunk([{"text": " is"}], "STOP", candidates=3),
        stream_chunk([{"text": " 4."}], "STOP", candidates=5),
    )
    chunks = run_stream(translator, raw)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "The answer"},
        {"content": " is"},
        {"content": " 4."},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["id"] for c in chunks} == {"chatcmpl-r1"} == {translator.chunk_id}
    assert {c["model"] for c in chunks} == {"gemini-2.5-flash"}
    assert translator.text == "The answer is 4."


def test_stream_usage_is_the_last_running_total() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    first = stream_chunk([{"text": "a"}], candidates=2)
    run_stream(translator, sse(first, stream_chunk([{"text": "b"}], "MAX_TOKENS", candidates=5)))
    assert translator.usage is not None
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (14, 5)
    assert translator.finish_reason == "length"


def test_streamed_function_calls_become_whole_tool_call_deltas() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True, tools=[ADD_TOOL]))
    raw = sse(
        stream_chunk([{"functionCall": {"name": "add", "args": {"a": 2}}}], "STOP"),
        stream_chunk([{"functionCall": {"name": "now", "args": {}}}]),
    )
    chunks = run_stream(translator, raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    calls = deltas[0]["tool_calls"] + deltas[1]["tool_calls"]
    assert [(c["index"], c["type"], c["function"]) for c in calls] == [
        (0, "function", {"name": "add", "arguments": '{"a":2}'}),
        (1, "function", {"name": "now", "arguments": "{}"}),
    ]
    assert all(TOOL_CALL_ID.fullmatch(call["id"]) for call in calls)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert translator.finish_reason == "tool_calls"


def test_a_blocked_prompt_stream_ends_with_content_filter() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    chunks = run_stream(translator, sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}))
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "content_filter"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_a_stream_that_never_carried_a_finish_reason_is_incomplete() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    with pytest.raises(ProviderError) as caught:
        run_stream(translator, sse(stream_chunk([{"text": "The answer"}])))
    assert (caught.value.kind, caught.value.code) == (FailureKind.TRANSIENT, "stream_incomplete")


def test_an_error_object_mid_stream_raises() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(ProviderError) as caught:
        run_stream(translator, sse(stream_chunk([{"text": "a"}]), error))
    assert (caught.value.kind, caught.value.message) == (
        FailureKind.TRANSIENT,
        error["error"]["message"],
    )


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"error": {"code": code, "message": message, "status": status, "details": list(details)}}
    )


INVALID_KEY = google_error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    },
)
QUOTA = google_error(
    429,
    "RESOURCE_EXHAUSTED",
    "You exceeded your current quota, please check your plan and billing details.",
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"},
)
QUOTA_FRACTION = google_error(
    429,
    "RESOURCE_EXHAUSTED",
    "Quota exceeded",
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code", "retry_after"),
    [
        (400, INVALID_KEY, {}, "permanent", "invalid_api_key", None),
        (400, google_error(400, "INVALID_ARGUMENT", "API key not valid."), {}, "permanent",
         "invalid_api_key", None),
        (400, google_error(400, "FAILED_PRECONDITION", "User location is not supported for the "
                           "API use without a billing account linked."), {}, "permanent",
         "failed_precondition", None),
        (400, google_error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the "
                           "maximum number of tokens allowed (1048576)."), {}, "rejected",
         "context_length_exceeded", None),
        (400, google_error(400, "INVALID_ARGUMENT", "Invalid value at 'contents'"), {}, "rejected",
         "bad_request", None),
        (403, google_error(403, "PERMISSION_DENIED", "Permission denied"), {}, "permanent",
         "forbidden", None),
        (404, google_error(404, "NOT_FOUND", "models/gemini-9 is not found"), {}, "permanent",
         "model_not_found", None),
        (429, QUOTA, {}, "transient", "rate_limited", 20.0),
        (429, QUOTA_FRACTION, {"retry-after": "60"}, "transient", "rate_limited", 1.5),
        (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), {"retry-after": "9"},
         "transient", "rate_limited", 9.0),
        (500, google_error(500, "INTERNAL", "An internal error has occurred."), {}, "transient",
         "upstream_error", None),
        (503, google_error(503, "UNAVAILABLE", "The model is overloaded."), {}, "transient",
         "upstream_error", None),
        (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline expired"), {}, "transient",
         "upstream_error", None),
        (502, b"<html><title>502 Bad Gateway</title></html>", {}, "transient", "upstream_error",
         None),
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
    assert (error.kind, error.code, error.status, error.retry_after) == (
        kind,
        code,
        status,
        retry_after,
    )


def test_the_error_message_is_googles_own_without_our_key() -> None:
    assert ADAPTER.classify(429, {}, QUOTA).message.startswith("You exceeded your current quota")
    echoed = google_error(400, "INVALID_ARGUMENT", f"API key {KEY} not valid.")
    assert KEY not in ADAPTER.classify(400, {}, echoed).message
