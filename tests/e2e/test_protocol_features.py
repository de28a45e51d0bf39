"""Tools, JSON mode and multi-turn conversations through each protocol, via the openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

MODELS = ["aimlapi/gpt-4o-mini", "google/gemini-2.0-flash", "anthropic/claude-3-5-haiku-latest"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("model", MODELS)
def test_a_tool_call_comes_back_in_openai_shape(openai_client: openai.OpenAI, model: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice="required",
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


@pytest.mark.parametrize("model", MODELS)
def test_a_tool_result_is_answered_in_text(openai_client: openai.OpenAI, model: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 4 degrees"},
        ],
        tools=[WEATHER],
    )

    assert "Sunny" in completion.choices[0].message.content


@pytest.mark.parametrize("model", ["aimlapi/gpt-4o-mini", "google/gemini-2.0-flash"])
def test_json_mode_returns_a_json_object(openai_client: openai.OpenAI, model: str) -> None:
    completion = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Summarise the meeting as JSON."}],
        response_format={"type": "json_object"},
    )

    assert isinstance(json.loads(completion.choices[0].message.content), dict)


@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    openai_client: openai.OpenAI, model: str
) -> None:
    completion = openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write a very long summary of the whole meeting."}],
        max_tokens=3,
    )

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens <= 3
