"""The gateway as a client sees it: the official openai SDK against a live server."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest

from billing.models import UsageRecord
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def test_a_summary_request_is_answered_by_aimlapi_first(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )
    completion = raw.parse()
    assert "aimlapi" in completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-switchboard-provider"] == "aimlapi"
    assert raw.headers["x-switchboard-route"] == "summary"
    assert raw.headers["x-switchboard-attempts"] == "1"
    assert raw.headers["x-switchboard-cache"] == "miss"
    assert drain_ledger() == 1
    record = UsageRecord.objects.get(request_id=raw.headers["x-switchboard-request-id"])
    assert record.provider == "aimlapi"
    assert record.prompt_tokens == completion.usage.prompt_tokens
    assert record.cost_usd == Decimal(raw.headers["x-switchboard-cost-usd"]) > 0
    assert [a["outcome"] for a in record.attempts] == ["ok"]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("openai/gpt-4o-mini", "openai"),
        ("google/gemini-2.0-flash", "google"),
        ("anthropic/claude-3-5-haiku-latest", "anthropic"),
    ],
)
def test_each_protocol_answers_through_the_sdk(
    openai_client: openai.OpenAI, model: str, provider: str
) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-switchboard-provider"] == provider
    assert provider in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o-mini", "google/gemini-2.0-flash", "anthropic/claude-3-5-haiku-latest"]
)
def test_each_protocol_streams_through_the_sdk_with_usage(
    openai_client: openai.OpenAI, model: str
) -> None:
    stream = openai_client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert model.split("/")[0] in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert drain_ledger() == 1
    record = UsageRecord.objects.get()
    assert record.streamed and record.status == "ok"
    assert record.completion_tokens == chunks[-1].usage.completion_tokens


def test_the_async_sdk_gets_answers_concurrently(
    gateway: str, client_key: str, demo: object
) -> None:
    async def ask_three() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway}/v1", api_key=client_key, max_retries=0
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.chat.completions.create(model="summary", messages=MESSAGES)
                    for _ in range(3)
                )
            )
        return [a.choices[0].message.content or "" for a in answers]

    assert all("aimlapi" in text for text in asyncio.run(ask_three()))
    assert drain_ledger() == 3


def test_a_bad_key_is_an_authentication_error(gateway: str, demo: object) -> None:
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="sb-prod-wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="summary", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"


def test_a_malformed_body_is_a_bad_request_naming_the_field(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES, temperature=7)
    assert "temperature" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model="summary", messages=[{"role": "robot", "content": "hi"}]
        )
    assert "messages[0].role" in caught.value.message
    assert sum(demo.count(p) for p in ("aimlapi", "openai", "google", "anthropic")) == 0


def test_context_from_headers_and_metadata_reaches_the_ledger(
    openai_client: openai.OpenAI,
) -> None:
    openai_client.chat.completions.create(
        model="summary",
        messages=MESSAGES,
        metadata={"meeting_type": "sales"},
        extra_headers={"X-Switchboard-Language": "de", "X-Switchboard-Meeting-Type": "standup"},
    )

    drain_ledger()
    context = UsageRecord.objects.get().context
    assert context == {"meeting_type": "sales", "language": "de"}


def test_an_unknown_model_is_not_found(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="no-such-route", messages=MESSAGES)
    assert "no-such-route" in caught.value.message


def test_models_lists_routes_and_deployments(openai_client: openai.OpenAI) -> None:
    ids = {model.id for model in openai_client.models.list()}
    assert {"summary", "fallback-demo", "gpt-4o-mini", "aimlapi/gpt-4o-mini"} <= ids
