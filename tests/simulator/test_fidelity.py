"""The official SDKs, unchanged, against the simulator: the proof it speaks the real protocols."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anthropic
import httpx2
import openai
import orjson
import pydantic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

if TYPE_CHECKING:
    from tests.servers import SimulatorHandle

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
SAMPLE_ARGUMENTS = {"city": "sample", "days": 1, "unit": "celsius"}
QUESTION = "What is the capital of France?"
# httpx2 is the SDKs' own transport; its errors are what a dropped connection looks like.
TRANSPORT_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError, httpx2.TransportError)


@pytest.fixture
def openai_client(simulator: SimulatorHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key="sk-test", base_url=f"{simulator.url}/openai/v1", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def aimlapi_client(simulator: SimulatorHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key="aiml-test", base_url=f"{simulator.url}/aimlapi/v1", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def anthropic_client(simulator: SimulatorHandle) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        api_key="sk-ant-test", base_url=f"{simulator.url}/anthropic", max_retries=0
    ) as client:
        yield client


def make_genai(
    simulator: SimulatorHandle, api_key: str = "goog-test", **options: object
) -> genai.Client:
    return genai.Client(
        api_key=api_key,
        http_options=genai_types.HttpOptions(
            base_url=f"{simulator.url}/google",
            api_version="v1beta",
            retry_options=genai_types.HttpRetryOptions(attempts=1),
            **options,
        ),
    )


@pytest.fixture
def genai_client(simulator: SimulatorHandle) -> Iterator[genai.Client]:
    with make_genai(simulator) as client:
        yield client


def ask(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def get(
    simulator: SimulatorHandle, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{simulator.url}{path}", headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


# -- OpenAI ---------------------------------------------------------------------


def test_openai_sdk_reads_a_completion_from_the_openai_route(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, *ask()],
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == (
        "Simulated openai gpt-4o answer: What is the capital of France?"
    )
    assert completion.choices[0].finish_reason == "stop"
    # "Be brief." is 2 tokens and the question 7, each plus 3 for its message.
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 15
    assert completion.usage.completion_tokens == len(completion.choices[0].message.content) // 4
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-remaining-requests"] == "9999"
    assert raw.headers["x-ratelimit-reset-tokens"] == "0s"


def test_openai_sdk_streams_the_same_answer_with_usage_last(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(), stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated openai gpt-4o answer: What is the capital of France?"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + len(text) // 4
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_sdk_gets_a_tool_call_filling_the_required_arguments(
    openai_client: openai.OpenAI,
) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=ask("Weather in Paris?"), tools=[WEATHER_TOOL]
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == SAMPLE_ARGUMENTS


def test_openai_sdk_streams_a_tool_call_in_argument_fragments(openai_client: openai.OpenAI) -> None:
    second_tool = {**WEATHER_TOOL, "function": {"name": "noop", "parameters": {}}}
    stream = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=ask(),
        tools=[second_tool, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    with stream:
        chunks = list(stream)

    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert calls[0].function.name == "get_weather"
    assert len(calls) > 2
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == SAMPLE_ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_result_turn_gets_a_text_answer_quoting_the_result(
    openai_client: openai.OpenAI,
) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o",
        tools=[WEATHER_TOOL],
        messages=[
            *ask("Weather in Paris?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
        ],
    )

    assert completion.choices[0].finish_reason == "stop"
    assert "the tool returned Sunny, 21C" in (completion.choices[0].message.content or "")


def test_tool_choice_none_gets_text_instead_of_a_call(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(), tools=[WEATHER_TOOL], tool_choice="none"
    )

    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


def test_json_mode_answers_with_a_json_object_naming_the_provider(
    openai_client: openai.OpenAI,
) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(), response_format={"type": "json_object"}
    )

    answer = json.loads(completion.choices[0].message.content or "")
    assert answer["provider"] == "openai"
    assert answer["answer"].startswith("Simulated openai gpt-4o answer:")


def test_structured_output_parses_into_the_callers_model(openai_client: openai.OpenAI) -> None:
    class Capital(pydantic.BaseModel):
        answer: str
        country: str
        population: int

    completion = openai_client.chat.completions.parse(
        model="gpt-4o", messages=ask(), response_format=Capital
    )

    parsed = completion.choices[0].message.parsed
    assert parsed is not None
    assert parsed.answer.startswith("Simulated openai")
    assert parsed.population == 1


def test_max_tokens_truncates_and_reports_length(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(), max_completion_tokens=3
    )

    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Simulated op"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_a_stop_sequence_cuts_the_answer_before_it(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=ask(), stop=["answer", "capital"]
    )

    assert completion.choices[0].message.content == "Simulated openai gpt-4o "
    assert completion.choices[0].finish_reason == "stop"


def test_an_invalid_openai_key_raises_authentication_error(simulator: SimulatorHandle) -> None:
    with (
        openai.OpenAI(
            api_key="invalid-key", base_url=f"{simulator.url}/openai/v1", max_retries=0
        ) as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.chat.completions.create(model="gpt-4o", messages=ask())

    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id is not None


def test_a_rate_limit_fault_raises_rate_limit_error_with_retry_after(
    simulator: SimulatorHandle, openai_client: openai.OpenAI
) -> None:
    simulator.fault(provider="openai", mode="rate_limit", retry_after=3)

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model="gpt-4o", messages=ask())

    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


def test_a_missing_model_raises_not_found(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="gpt-missing", messages=ask())

    assert caught.value.code == "model_not_found"


def test_a_prompt_over_the_context_window_gets_context_length_exceeded(
    openai_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model="gpt-small-ctx", messages=ask("x" * 4000))

    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 1000 tokens" in caught.value.message


def test_openai_sdk_lists_models_on_both_openai_protocol_routes(
    openai_client: openai.OpenAI, aimlapi_client: openai.OpenAI
) -> None:
    assert "gpt-4o" in [m.id for m in openai_client.models.list()]
    assert "anthropic/claude-sonnet-4.5" in [m.id for m in aimlapi_client.models.list()]


# -- AIMLAPI --------------------------------------------------------------------


def test_openai_sdk_reads_a_completion_and_cost_headers_from_the_aimlapi_route(
    aimlapi_client: openai.OpenAI,
) -> None:
    raw = aimlapi_client.chat.completions.with_raw_response.create(
        model="anthropic/claude-sonnet-4.5",
        messages=ask(),
        extra_headers={"X-Client-Request-Id": "order-8f21c4"},
    )
    completion = raw.parse()

    content = completion.choices[0].message.content or ""
    assert content.startswith("Simulated aimlapi anthropic/claude-sonnet-4.5 answer:")
    usage = completion.usage
    assert usage is not None
    credits = usage.prompt_tokens * 2 + usage.completion_tokens * 4
    assert raw.headers["x-aimlapi-credits-used"] == str(credits)
    assert raw.headers["x-aimlapi-usd-spent"] == f"{credits / 2_000_000:.9f}"
    assert raw.headers["x-inference-id"]
    assert raw.headers["x-client-request-id"] == "order-8f21c4"


def test_aimlapi_drops_an_invalid_client_request_id_silently(aimlapi_client: openai.OpenAI) -> None:
    raw = aimlapi_client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask(), extra_headers={"X-Client-Request-Id": "no spaces/allowed"}
    )

    assert "x-client-request-id" not in raw.headers
    assert raw.parse().choices[0].message.content


@pytest.mark.parametrize("include_usage", [True, False])
def test_an_aimlapi_stream_prices_itself_in_the_final_chunk(
    aimlapi_client: openai.OpenAI, include_usage: bool
) -> None:
    raw = aimlapi_client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=ask(),
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    assert "x-aimlapi-credits-used" not in raw.headers
    assert raw.headers["x-inference-id"]
    stream = raw.parse()
    with stream:
        chunks = list(stream)

    metas = [getattr(chunk, "meta", None) for chunk in chunks]
    assert all(meta is None for meta in metas[:-1])
    usage = metas[-1]["usage"]
    assert usage["usd_spent"] == pytest.approx(usage["credits_used"] / 2_000_000)
    if include_usage:
        assert chunks[-1].choices == []
        tokens = chunks[-1].usage
        assert tokens is not None
        assert usage["credits_used"] == tokens.prompt_tokens * 2 + tokens.completion_tokens * 4
    else:
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_aimlapi_errors_use_aimlapis_own_body(simulator: SimulatorHandle) -> None:
    with (
        openai.OpenAI(
            api_key="invalid", base_url=f"{simulator.url}/aimlapi/v1", max_retries=0
        ) as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.chat.completions.create(model="gpt-4o", messages=ask())

    body = caught.value.body
    assert isinstance(body, dict)
    assert body["statusCode"] == 401
    assert body["path"] == "/v1/chat/completions"
    assert body["message"].startswith("This request requires a valid API key")
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert caught.value.response.headers["x-inference-id"]


def test_running_out_of_aimlapi_credit_is_a_403(
    simulator: SimulatorHandle, aimlapi_client: openai.OpenAI
) -> None:
    simulator.fault(provider="aimlapi", mode="no_credit")

    with pytest.raises(openai.PermissionDeniedError) as caught:
        aimlapi_client.chat.completions.create(model="gpt-4o", messages=ask())

    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"].startswith(
        "You've run out of credits. Please top up your balance"
    )


def test_the_aimlapi_catalogue_is_a_bare_array_needing_no_key(simulator: SimulatorHandle) -> None:
    status, body = get(simulator, "/aimlapi/models")

    catalogue = orjson.loads(body)
    assert status == 200
    assert isinstance(catalogue, list)
    first = catalogue[0]
    assert first["type"] == "chat-completion"
    assert {"name", "developer", "contextLength", "maxTokens"} <= set(first["info"])
    assert "openai/chat-completion.stream" in first["features"]
    assert first["endpoints"] == ["/v1/chat/completions"]


# -- Anthropic ------------------------------------------------------------------


def test_anthropic_sdk_creates_a_message(anthropic_client: anthropic.Anthropic) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=256, system="Be brief.", messages=ask()
    )
    message = raw.parse()

    assert message.content[0].type == "text"
    assert message.content[0].text == (
        "Simulated anthropic claude-sonnet-4-6 answer: What is the capital of France?"
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 15
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-remaining"]
    assert raw.headers["anthropic-ratelimit-tokens-reset"].endswith("Z")


def test_anthropic_sdk_streams_a_message(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, messages=ask()
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) > 3
    assert "".join(pieces) == final.content[0].text
    assert final.content[0].text.startswith("Simulated anthropic claude-sonnet-4-6 answer:")
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(final.content[0].text) // 4


def test_anthropic_sdk_receives_tool_use_blocks(anthropic_client: anthropic.Anthropic) -> None:
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
    }
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-6", max_tokens=256, messages=ask(), tools=[tool]
    )
    with anthropic_client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, messages=ask(), tools=[tool]
    ) as stream:
        streamed = stream.get_final_message()

    for result in (message, streamed):
        assert result.stop_reason == "tool_use"
        block = result.content[0]
        assert block.type == "tool_use"
        assert block.id.startswith("toolu_")
        assert block.name == "get_weather"
        assert block.input == SAMPLE_ARGUMENTS


def test_an_anthropic_tool_result_gets_a_text_answer(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}],
            },
        ],
    )

    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert "the tool returned Sunny" in message.content[0].text


def test_anthropic_honours_max_tokens_and_stop_sequences(
    anthropic_client: anthropic.Anthropic,
) -> None:
    short = anthropic_client.messages.create(model="claude-x", max_tokens=2, messages=ask())
    stopped = anthropic_client.messages.create(
        model="claude-x", max_tokens=100, messages=ask(), stop_sequences=["answer"]
    )

    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 2
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == "answer"
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == "Simulated anthropic claude-x "


def test_anthropic_structured_output_parses_into_the_callers_model(
    anthropic_client: anthropic.Anthropic,
) -> None:
    class Capital(pydantic.BaseModel):
        answer: str
        population: int

    message = anthropic_client.messages.parse(
        model="claude-sonnet-4-6", max_tokens=256, messages=ask(), output_format=Capital
    )

    assert isinstance(message.parsed_output, Capital)
    assert message.parsed_output.answer.startswith("Simulated anthropic")


def test_an_overloaded_fault_raises_overloaded_error(
    simulator: SimulatorHandle, anthropic_client: anthropic.Anthropic
) -> None:
    simulator.fault(provider="anthropic", mode="error", status=529)

    with pytest.raises(anthropic.OverloadedError) as caught:
        anthropic_client.messages.create(model="claude-x", max_tokens=10, messages=ask())

    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == 529
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert caught.value.request_id is not None


def test_anthropic_rejects_a_missing_version_header_and_max_tokens(
    simulator: SimulatorHandle,
) -> None:
    body = orjson.dumps({"model": "claude-x", "messages": ask()})
    url = f"{simulator.url}/anthropic/v1/messages"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    statuses = []
    for headers in ({"x-api-key": "k"}, {"x-api-key": "k", "anthropic-version": "2023-06-01"}):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught, opener.open(request, timeout=5):
            pass
        with caught.value as error:
            statuses.append((error.code, orjson.loads(error.read())))

    (first_status, first), (second_status, second) = statuses
    assert first_status == second_status == 400
    assert first["type"] == "error"
    assert first["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    assert second["error"]["message"] == "max_tokens: Field required"
    assert second["request_id"].startswith("req_")


def test_an_anthropic_prompt_over_the_window_is_too_long(
    anthropic_client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client.messages.create(
            model="claude-small-ctx", max_tokens=10, messages=ask("y" * 4000)
        )

    assert "prompt is too long" in caught.value.message


def test_an_invalid_anthropic_key_raises_authentication_error(simulator: SimulatorHandle) -> None:
    with (
        anthropic.Anthropic(
            api_key="invalid", base_url=f"{simulator.url}/anthropic", max_retries=0
        ) as client,
        pytest.raises(anthropic.AuthenticationError),
    ):
        client.messages.create(model="claude-x", max_tokens=10, messages=ask())


# -- Google Gemini --------------------------------------------------------------


def test_genai_sdk_generates_content_and_reads_usage(genai_client: genai.Client) -> None:
    response = genai_client.models.generate_content(
        model="gemini-2.5-flash",
        contents=QUESTION,
        config=genai_types.GenerateContentConfig(system_instruction="Be brief."),
    )

    assert (
        response.text == "Simulated google gemini-2.5-flash answer: What is the capital of France?"
    )
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == 15
    assert usage.candidates_token_count == len(response.text) // 4
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.model_version == "gemini-2.5-flash"
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP


def test_genai_sdk_streams_content_with_running_usage(genai_client: genai.Client) -> None:
    chunks = list(
        genai_client.models.generate_content_stream(model="gemini-2.5-flash", contents=QUESTION)
    )

    text = "".join(chunk.text or "" for chunk in chunks)
    assert len(chunks) > 3
    assert text == "Simulated google gemini-2.5-flash answer: What is the capital of France?"
    counts = [chunk.usage_metadata.candidates_token_count for chunk in chunks]
    assert counts == sorted(counts)
    assert counts[-1] == len(text) // 4
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP


def test_genai_sdk_receives_a_function_call(genai_client: genai.Client) -> None:
    declaration = genai_types.FunctionDeclaration(
        name="get_weather",
        description="Weather for a city",
        parameters=genai_types.Schema(
            type=genai_types.Type.OBJECT,
            properties={
                "city": genai_types.Schema(type=genai_types.Type.STRING),
                "days": genai_types.Schema(type=genai_types.Type.INTEGER),
            },
            required=["city", "days"],
        ),
    )
    response = genai_client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Weather in Paris?",
        config=genai_types.GenerateContentConfig(
            tools=[genai_types.Tool(function_declarations=[declaration])]
        ),
    )

    assert response.function_calls is not None
    call = response.function_calls[0]
    assert call.name == "get_weather"
    assert call.args == {"city": "sample", "days": 1}


def test_genai_json_mode_fills_the_response_schema(genai_client: genai.Client) -> None:
    class Capital(pydantic.BaseModel):
        answer: str
        population: int

    plain = genai_client.models.generate_content(
        model="gemini-2.5-flash",
        contents=QUESTION,
        config=genai_types.GenerateContentConfig(response_mime_type="application/json"),
    )
    typed = genai_client.models.generate_content(
        model="gemini-2.5-flash",
        contents=QUESTION,
        config=genai_types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=Capital
        ),
    )

    assert json.loads(plain.text or "")["provider"] == "google"
    assert isinstance(typed.parsed, Capital)
    assert typed.parsed.answer.startswith("Simulated google")


def test_genai_max_output_tokens_finishes_with_max_tokens(genai_client: genai.Client) -> None:
    response = genai_client.models.generate_content(
        model="gemini-2.5-flash",
        contents=QUESTION,
        config=genai_types.GenerateContentConfig(max_output_tokens=2),
    )

    assert response.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    assert response.text == "Simulate"


def test_a_gemini_rate_limit_fault_raises_client_error_with_retry_delay(
    simulator: SimulatorHandle, genai_client: genai.Client
) -> None:
    simulator.fault(provider="google", mode="rate_limit", retry_after=2)

    with pytest.raises(genai_errors.ClientError) as caught:
        genai_client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)

    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    assert details == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]


def test_a_gemini_503_fault_raises_server_error_unavailable(
    simulator: SimulatorHandle, genai_client: genai.Client
) -> None:
    simulator.fault(provider="google", mode="error", status=503)

    with pytest.raises(genai_errors.ServerError) as caught:
        genai_client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)

    assert caught.value.status == "UNAVAILABLE"


def test_an_invalid_gemini_key_is_a_400_api_key_invalid(simulator: SimulatorHandle) -> None:
    with (
        make_genai(simulator, api_key="invalid-key") as client,
        pytest.raises(genai_errors.ClientError) as caught,
    ):
        client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)

    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_gemini_context_and_missing_model_errors_are_native(genai_client: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as too_long:
        genai_client.models.generate_content(model="gemini-small-ctx", contents="z" * 4000)
    with pytest.raises(genai_errors.ClientError) as missing:
        genai_client.models.generate_content(model="gemini-missing", contents=QUESTION)

    assert too_long.value.code == 400
    assert "input token count exceeds" in (too_long.value.message or "")
    assert missing.value.code == 404
    assert missing.value.status == "NOT_FOUND"


def test_genai_sdk_lists_models_and_counts_tokens(genai_client: genai.Client) -> None:
    names = [model.name for model in genai_client.models.list()]
    counted = genai_client.models.count_tokens(model="gemini-2.5-flash", contents=QUESTION)

    assert "models/gemini-2.5-flash" in names
    assert counted.total_tokens == 10


def test_gemini_streams_a_json_array_without_alt_sse(simulator: SimulatorHandle) -> None:
    request = urllib.request.Request(
        f"{simulator.url}/google/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=k",
        data=orjson.dumps({"contents": [{"parts": [{"text": QUESTION}]}]}),
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        chunks = orjson.loads(response.read())

    assert isinstance(chunks, list)
    assert len(chunks) > 3
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text.endswith(QUESTION)


# -- Fault control ----------------------------------------------------------------


def test_a_timeout_fault_times_out_the_client_without_blocking_others(
    simulator: SimulatorHandle, openai_client: openai.OpenAI
) -> None:
    simulator.fault(provider="openai", mode="timeout", times=1)

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        openai_client.with_options(timeout=0.5).chat.completions.create(
            model="gpt-4o", messages=ask()
        )
    answered = openai_client.chat.completions.create(model="gpt-4o", messages=ask())

    assert answered.choices[0].message.content
    assert time.monotonic() - started < 5


def test_a_slow_fault_delays_a_normal_answer(
    simulator: SimulatorHandle, anthropic_client: anthropic.Anthropic
) -> None:
    simulator.fault(provider="anthropic", mode="slow", delay_ms=300)

    started = time.monotonic()
    message = anthropic_client.messages.create(model="claude-x", max_tokens=10, messages=ask())

    assert time.monotonic() - started >= 0.3
    assert message.content


def test_a_reset_fault_is_a_transport_error_in_every_sdk(
    simulator: SimulatorHandle,
    openai_client: openai.OpenAI,
    anthropic_client: anthropic.Anthropic,
    genai_client: genai.Client,
) -> None:
    simulator.fault(provider="*", mode="reset")

    with pytest.raises(openai.APIConnectionError):
        openai_client.chat.completions.create(model="gpt-4o", messages=ask())
    with pytest.raises(anthropic.APIConnectionError):
        anthropic_client.messages.create(model="claude-x", max_tokens=10, messages=ask())
    with pytest.raises(httpx2.RemoteProtocolError):
        genai_client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)


def test_a_stream_cut_delivers_two_deltas_then_a_transport_error(
    simulator: SimulatorHandle,
    openai_client: openai.OpenAI,
    anthropic_client: anthropic.Anthropic,
    genai_client: genai.Client,
) -> None:
    simulator.fault(provider="*", mode="stream_cut")

    received: list[str] = []
    stream = openai_client.chat.completions.create(model="gpt-4o", messages=ask(), stream=True)
    with stream, pytest.raises(TRANSPORT_ERRORS):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert [piece for piece in received if piece] == ["Simulated openai ", "gpt-4o answer: "]

    pieces: list[str] = []
    with (
        pytest.raises(TRANSPORT_ERRORS),
        anthropic_client.messages.stream(model="claude-x", max_tokens=99, messages=ask()) as s,
    ):
        pieces.extend(s.text_stream)
    assert pieces == ["Simulated anthropic ", "claude-x answer: "]

    texts: list[str] = []
    with pytest.raises(TRANSPORT_ERRORS):
        for part in genai_client.models.generate_content_stream(
            model="gemini-2.5-flash", contents=QUESTION
        ):
            texts.append(part.text or "")
    assert texts == ["Simulated google ", "gemini-2.5-flash answer: "]


def test_a_stream_cut_on_a_plain_request_behaves_like_reset(
    simulator: SimulatorHandle, openai_client: openai.OpenAI
) -> None:
    simulator.fault(provider="openai", mode="stream_cut")

    with pytest.raises(openai.APIConnectionError):
        openai_client.chat.completions.create(model="gpt-4o", messages=ask())


def test_a_malformed_fault_is_an_sdk_error_not_an_answer(
    simulator: SimulatorHandle,
    openai_client: openai.OpenAI,
    anthropic_client: anthropic.Anthropic,
    genai_client: genai.Client,
) -> None:
    simulator.fault(provider="*", mode="malformed")

    # The SDKs hand a broken 200 body to json.loads and let its error through.
    with pytest.raises(json.JSONDecodeError):
        openai_client.chat.completions.create(model="gpt-4o", messages=ask())
    stream = openai_client.chat.completions.create(model="gpt-4o", messages=ask(), stream=True)
    with stream, pytest.raises(json.JSONDecodeError):
        list(stream)
    with (
        pytest.raises(json.JSONDecodeError),
        anthropic_client.messages.stream(model="claude-x", max_tokens=99, messages=ask()) as s,
    ):
        s.get_final_message()
    with pytest.raises(json.JSONDecodeError):
        genai_client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)
    with pytest.raises(genai_errors.UnknownApiResponseError):
        list(
            genai_client.models.generate_content_stream(model="gemini-2.5-flash", contents=QUESTION)
        )


def test_a_fault_with_times_clears_itself_after_that_many_requests(
    simulator: SimulatorHandle, openai_client: openai.OpenAI
) -> None:
    simulator.fault(provider="openai", mode="error", status=500, times=2)

    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            openai_client.chat.completions.create(model="gpt-4o", messages=ask())
    answered = openai_client.chat.completions.create(model="gpt-4o", messages=ask())

    assert answered.choices[0].message.content
    assert simulator.control("GET", "/_control/faults") == {"faults": []}


def test_faults_apply_in_the_order_added_and_only_to_their_model(
    simulator: SimulatorHandle, openai_client: openai.OpenAI
) -> None:
    simulator.fault(provider="openai", mode="error", status=503, times=1, model="gpt-4o")
    simulator.fault(provider="openai", mode="rate_limit", times=1)

    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    with pytest.raises(openai.InternalServerError) as scoped:
        openai_client.chat.completions.create(model="gpt-4o", messages=ask())
    answered = openai_client.chat.completions.create(model="gpt-4o", messages=ask())

    assert scoped.value.status_code == 503
    assert answered.choices[0].message.content


def test_no_credit_is_each_providers_own_quota_error(
    simulator: SimulatorHandle,
    openai_client: openai.OpenAI,
    anthropic_client: anthropic.Anthropic,
    genai_client: genai.Client,
) -> None:
    simulator.fault(provider="*", mode="no_credit")

    with pytest.raises(openai.RateLimitError) as openai_error:
        openai_client.chat.completions.create(model="gpt-4o", messages=ask())
    with pytest.raises(anthropic.BadRequestError) as anthropic_error:
        anthropic_client.messages.create(model="claude-x", max_tokens=10, messages=ask())
    with pytest.raises(genai_errors.ClientError) as google_error:
        genai_client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)

    assert openai_error.value.code == "insufficient_quota"
    assert "credit balance is too low" in anthropic_error.value.message
    assert google_error.value.code == 429


def test_calls_are_counted_per_provider_faulted_or_not(
    simulator: SimulatorHandle, openai_client: openai.OpenAI, genai_client: genai.Client
) -> None:
    openai_client.chat.completions.create(model="gpt-4o", messages=ask())
    simulator.fault(provider="openai", mode="error", times=1)
    with pytest.raises(openai.InternalServerError):
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=ask("second"))
    genai_client.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)

    calls = simulator.calls()
    assert calls["openai"]["count"] == 2
    assert calls["openai"]["last_request"]["model"] == "gpt-4o-mini"
    assert calls["openai"]["last_headers"]["authorization"] == "Bearer sk-test"
    assert calls["google"]["count"] == 1
    assert calls["google"]["last_headers"]["x-goog-api-key"] == "goog-test"
    assert calls["anthropic"] == {
        "count": 0,
        "last_request": None,
        "last_headers": None,
        "connections": 0,
    }
    assert simulator.control("DELETE", "/_control/calls")["openai"]["count"] == 0


def test_the_control_api_rejects_bad_fault_specs_and_clears_by_provider(
    simulator: SimulatorHandle,
) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        simulator.fault(provider="openai", mode="explode")
    with caught.value as error:
        assert error.code == 400
    simulator.fault(provider="openai", mode="slow")
    simulator.fault(provider="google", mode="reset")

    cleared = simulator.control("DELETE", "/_control/faults?provider=openai")

    assert cleared == {"cleared": 1}
    assert [f["provider"] for f in simulator.control("GET", "/_control/faults")["faults"]] == [
        "google"
    ]
    assert get(simulator, "/healthz") == (200, b'{"status":"ok"}')


def test_the_simulator_imports_without_django_or_httpx() -> None:
    code = (
        "import sys, routing.simulator, routing.simulator.server\n"
        "leaked = [m for m in sys.modules if m.split('.')[0] in ('django', 'httpx', 'httpx2')]\n"
        "assert not leaked, leaked\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=30)
