from __future__ import annotations

from typing import Any

import orjson
import pytest

from routing.providers.anthropic import DEFAULT_MAX_TOKENS, JSON_INSTRUCTION, AnthropicAdapter
from routing.providers.base import FailureKind, ProviderError, StreamTranslator, Target
from routing.providers.sse import SSEDecoder
from routing.schema import ChatRequest, validate_chat_body

ADAPTER = AnthropicAdapter()
KEY = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"
TARGET = Target(
    provider="anthropic",
    base_url="https://api.anthropic.com/v1/",
    model="claude-sonnet-4-5-20250929",
    api_key=KEY,
)
HELLO = [{"role": "user", "content": "Hello"}]
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
    },
}
CALL = {"id": "toolu_01", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}


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


def test_it_posts_to_messages_with_the_key_and_version_headers() -> None:
    upstream = ADAPTER.chat_request(TARGET, make_request())
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers == {
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    body = orjson.loads(upstream.body)
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["messages"] == [{"role": "user", "content": "Hello"}]
    assert "stream" not in body


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        *HELLO,
    ]
    body = sent(make_request(messages=messages))
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hello"}]


def test_a_multi_turn_conversation_keeps_its_turns_and_merges_same_role_ones() -> None:
    messages = [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another?"},
        {"role": "user", "content": [{"type": "text", "text": "An even one."}]},
    ]
    assert sent(make_request(messages=messages))["messages"] == [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Another?"},
                {"type": "text", "text": "An even one."},
            ],
        },
    ]


def test_image_parts_become_base64_or_url_image_blocks() -> None:
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    blocks = sent(make_request(messages=[{"role": "user", "content": content}]))["messages"][0]
    assert blocks["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_a_content_part_anthropic_cannot_take_is_rejected_for_this_provider_only() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_request(TARGET, make_request(messages=[{"role": "user", "content": [audio]}]))
    assert (caught.value.kind, caught.value.code) == (FailureKind.REJECTED, "unsupported_content")


@pytest.mark.parametrize(("temperature", "expected"), [(0, 0.0), (0.3, 0.3), (1, 1.0), (1.7, 1.0)])
def test_temperature_is_clamped_to_anthropics_range(temperature: float, expected: float) -> None:
    assert sent(make_request(temperature=temperature))["temperature"] == expected


def test_top_p_is_sent_alone() -> None:
    body = sent(make_request(top_p=0.9))
    assert body["top_p"] == 0.9
    assert "temperature" not in body


def test_top_p_is_dropped_when_temperature_is_sent_too() -> None:
    body = sent(make_request(temperature=0.2, top_p=0.9))
    assert body["temperature"] == 0.2
    assert "top_p" not in body


@pytest.mark.parametrize(
    ("params", "max_tokens"),
    [
        ({}, DEFAULT_MAX_TOKENS),
        ({"max_tokens": 64}, 64),
        ({"max_completion_tokens": 128}, 128),
        ({"max_tokens": 64, "max_completion_tokens": 128}, 128),
    ],
)
def test_max_tokens_is_always_sent(params: dict[str, int], max_tokens: int) -> None:
    assert sent(make_request(**params))["max_tokens"] == max_tokens


@pytest.mark.parametrize(("stop", "sequences"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_becomes_stop_sequences(stop: str | list[str], sequences: list[str]) -> None:
    assert sent(make_request(stop=stop))["stop_sequences"] == sequences


def test_json_object_mode_is_an_instruction_appended_to_the_system_prompt() -> None:
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    body = sent(make_request(messages=messages, response_format={"type": "json_object"}))
    assert body["system"] == f"Be brief.\n\n{JSON_INSTRUCTION}"


def test_a_json_schema_is_spelled_out_in_the_instruction() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    body = sent(make_request(response_format=response_format))
    assert body["system"].startswith(JSON_INSTRUCTION)
    assert orjson.dumps(schema).decode() in body["system"]


def test_tools_become_anthropic_tools_with_an_input_schema() -> None:
    body = sent(make_request(tools=[ADD_TOOL, {"type": "function", "function": {"name": "now"}}]))
    assert body["tools"] == [
        {
            "name": "add",
            "description": "Add two numbers.",
            "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "add"}}, {"type": "tool", "name": "add"}),
    ],
)
def test_tool_choice_is_translated(tool_choice: Any, expected: dict[str, Any]) -> None:
    assert sent(make_request(tools=[ADD_TOOL], tool_choice=tool_choice))["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    body = sent(make_request(tools=[ADD_TOOL], parallel_tool_calls=False))
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_calls_and_tool_results_become_tool_use_and_tool_result_blocks() -> None:
    messages = [
        {"role": "user", "content": "What is 2 + 0?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "2"},
        {"role": "user", "content": "Thanks."},
    ]
    assert sent(make_request(messages=messages, tools=[ADD_TOOL]))["messages"] == [
        {"role": "user", "content": "What is 2 + 0?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_01", "name": "add", "input": {"a": 2}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "2"},
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]


def test_the_end_user_and_streaming_are_passed_on() -> None:
    body = sent(make_request(user="u-42", stream=True, metadata={"team": "search"}))
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["stream"] is True


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_01AbC",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 18, "output_tokens": 4, **usage},
        }
    )


def parse(body: bytes) -> tuple[Any, dict[str, Any]]:
    completion = ADAPTER.parse_completion(TARGET, make_request(), body)
    return completion, orjson.loads(completion.body)


def test_an_anthropic_message_becomes_an_openai_completion() -> None:
    completion, body = parse(message([{"type": "text", "text": "Paris"}]))
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-msg_01AbC"
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 18, "completion_tokens": 4, "total_tokens": 22}
    assert (completion.text, completion.finish_reason) == ("Paris", "stop")


def test_anthropic_tool_use_becomes_an_openai_tool_call() -> None:
    content = [
        {"type": "text", "text": "Let me add."},
        {"type": "tool_use", "id": "toolu_01", "name": "add", "input": {"a": 2}},
    ]
    completion, body = parse(message(content, "tool_use"))
    assert body["choices"][0]["message"]["tool_calls"] == [
        {"id": "toolu_01", "type": "function", "function": {"name": "add", "arguments": '{"a":2}'}}
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert completion.text == "Let me add."


def test_a_message_with_only_a_tool_call_has_null_content() -> None:
    content = [{"type": "tool_use", "id": "toolu_01", "name": "add", "input": {}}]
    _, body = parse(message(content, "tool_use"))
    assert body["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_map_to_openai_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    completion, _ = parse(message([{"type": "text", "text": "x"}], stop_reason))
    assert completion.finish_reason == finish_reason


def test_prompt_tokens_include_both_cache_fields_and_cache_reads_count_as_cached() -> None:
    body = message(
        [{"type": "text", "text": "x"}], cache_creation_input_tokens=100, cache_read_input_tokens=50
    )
    completion, openai_body = parse(body)
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (168, 4, 50)
    assert openai_body["usage"]["prompt_tokens_details"] == {"cached_tokens": 50}


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"type": "message"}'])
def test_a_malformed_message_is_a_transient_failure(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_completion(TARGET, make_request(), body)
    assert (caught.value.kind, caught.value.code) == (FailureKind.TRANSIENT, "malformed_response")


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"
        for name, data in events
    )


MESSAGE_START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 8, "output_tokens": 1},
        },
    },
)
PING = ("ping", {"type": "ping"})
TEXT_EVENTS = [
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Par"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "is"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
]  # fmt: skip
MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def message_delta(stop_reason: str, output_tokens: int) -> tuple[str, dict[str, Any]]:
    return (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


def test_a_text_stream_becomes_openai_chunks() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    raw = sse(MESSAGE_START, PING, *TEXT_EVENTS, message_delta("end_turn", 4), MESSAGE_STOP)
    chunks = run_stream(translator, raw)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Par"},
        {"content": "is"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_1"} == {translator.chunk_id}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-5-20250929"}
    assert translator.text == "Paris"
    assert translator.finish_reason == "stop"


def test_a_stream_keeps_the_input_usage_from_message_start_and_the_output_from_message_delta() -> (
    None
):
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    run_stream(
        translator, sse(MESSAGE_START, *TEXT_EVENTS, message_delta("max_tokens", 4), MESSAGE_STOP)
    )
    assert translator.usage is not None
    usage = translator.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (20, 4, 8)
    assert translator.finish_reason == "length"


def test_a_streamed_tool_use_becomes_openai_tool_call_deltas() -> None:
    tool_events = [
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_01", "name": "add", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "2}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]  # fmt: skip
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True, tools=[ADD_TOOL]))
    raw = sse(
        MESSAGE_START, *TEXT_EVENTS, *tool_events, message_delta("tool_use", 30), MESSAGE_STOP
    )
    deltas = [c["choices"][0]["delta"] for c in run_stream(translator, raw)]
    assert deltas[3:] == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "add", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "2}"}}]},
        {},
    ]
    assert translator.finish_reason == "tool_calls"


def test_unknown_events_are_ignored() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    novel = ("content_block_hint", {"type": "content_block_hint", "hint": "new"})
    raw = sse(MESSAGE_START, novel, *TEXT_EVENTS, message_delta("end_turn", 4), MESSAGE_STOP)
    assert len(run_stream(translator, raw)) == 4


@pytest.mark.parametrize(
    ("error_type", "kind", "code"),
    [
        ("overloaded_error", FailureKind.TRANSIENT, "overloaded"),
        ("api_error", FailureKind.TRANSIENT, "stream_error"),
        ("rate_limit_error", FailureKind.TRANSIENT, "rate_limited"),
        ("invalid_request_error", FailureKind.REJECTED, "bad_request"),
    ],
)
def test_an_error_event_mid_stream_raises(error_type: str, kind: FailureKind, code: str) -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    error = ("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    with pytest.raises(ProviderError) as caught:
        run_stream(translator, sse(MESSAGE_START, *TEXT_EVENTS[:2], error))
    assert (caught.value.kind, caught.value.code, caught.value.message) == (
        kind,
        code,
        "Overloaded",
    )


def test_a_stream_without_message_stop_is_incomplete() -> None:
    translator = ADAPTER.stream_translator(TARGET, make_request(stream=True))
    with pytest.raises(ProviderError) as caught:
        run_stream(translator, sse(MESSAGE_START, *TEXT_EVENTS, message_delta("end_turn", 4)))
    assert (caught.value.kind, caught.value.code) == (FailureKind.TRANSIENT, "stream_incomplete")


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_1"}
    )


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code", "retry_after"),
    [
        (529, error_body("overloaded_error", "Overloaded"), {}, "transient", "overloaded", None),
        (500, error_body("overloaded_error", "Overloaded"), {}, "transient", "overloaded", None),
        (400, error_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000"),
         {}, "rejected", "context_length_exceeded", None),
        (400, error_body("invalid_request_error", "Your credit balance is too low to access the "
                         "Anthropic API."), {}, "permanent", "no_credit", None),
        (400, error_body("invalid_request_error", "max_tokens: Field required"), {}, "rejected",
         "bad_request", None),
        (413, error_body("request_too_large", "Request exceeds the maximum allowed size"), {},
         "rejected", "request_too_large", None),
        (413, b"<html>413 Request Entity Too Large</html>", {}, "rejected", "request_too_large",
         None),
        (401, error_body("authentication_error", "invalid x-api-key"), {}, "permanent",
         "invalid_api_key", None),
        (403, error_body("permission_error", "Not allowed"), {}, "permanent", "forbidden", None),
        (404, error_body("not_found_error", "model: claude-9"), {}, "permanent", "model_not_found",
         None),
        (429, error_body("rate_limit_error", "Rate limited"), {"retry-after": "12"}, "transient",
         "rate_limited", 12.0),
        (500, error_body("api_error", "Internal server error"), {}, "transient", "upstream_error",
         None),
        (502, b"upstream connect error", {}, "transient", "upstream_error", None),
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


def test_the_error_message_is_anthropics_own_without_our_key() -> None:
    error = ADAPTER.classify(401, {}, error_body("authentication_error", f"bad key {KEY}"))
    assert error.message == "bad key [redacted]"
    overloaded = ADAPTER.classify(529, {}, error_body("overloaded_error", "Overloaded"))
    assert overloaded.message == "Overloaded"
