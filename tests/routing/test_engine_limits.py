"""The engine's time limits and edge cases, through the live gateway."""

from __future__ import annotations

import logging
import time

import openai
import pytest
from django.test import override_settings

from billing.models import UsageRecord
from project.errors import ApiError
from routing.client import EnhancedHybridAIClient
from routing.models import Provider
from tests.factories import drain_ledger, make_client_key
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def test_a_hung_provider_cannot_spend_the_whole_deadline(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    assert Provider.objects.get(name="aimlapi").read_timeout == 60  # the default, unchanged
    demo.fault(provider="aimlapi", mode="timeout", delay_ms=30_000)
    from django.conf import settings

    with override_settings(SWITCHBOARD={**settings.SWITCHBOARD, "REQUEST_DEADLINE_SECONDS": 3}):
        started = time.monotonic()
        raw = openai_client.chat.completions.with_raw_response.create(
            model="summary", messages=MESSAGES
        )

    assert raw.headers["x-switchboard-provider"] == "openai"
    assert time.monotonic() - started < 3


def test_a_key_without_the_chat_scope_is_refused_with_403(
    gateway: str, demo: SimulatorHandle
) -> None:
    key = make_client_key(scopes=["usage:read"])
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)

    with client, pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="summary", messages=MESSAGES)

    assert "chat" in caught.value.message
    assert demo.count("aimlapi") == 0


def test_an_error_response_names_the_request_for_the_ledger(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="*", mode="error", status=503)

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    drain_ledger()
    request_id = caught.value.response.headers["x-switchboard-request-id"]
    assert UsageRecord.objects.get().request_id == request_id


def test_when_every_provider_refuses_it_is_a_502_without_retry_after(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="*", mode="error", status=401)

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert "retry-after" not in caught.value.response.headers
    assert caught.value.code == "all_providers_refused"


def test_a_cut_stream_is_recorded_before_an_in_process_caller_hears_of_it(
    demo: SimulatorHandle,
) -> None:
    demo.fault(provider="aimlapi", mode="stream_cut")
    received = []

    with pytest.raises(ApiError):
        for chunk in EnhancedHybridAIClient().stream(model="summary", messages=MESSAGES):
            received.append(chunk)

    assert received
    assert drain_ledger() == 1
    assert UsageRecord.objects.get().status == "partial"


def test_no_secret_reaches_the_logs_when_a_provider_fails(
    openai_client: openai.OpenAI,
    demo: SimulatorHandle,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-simulated-secret-0123456789abcdef"
    monkeypatch.setenv("SWITCHBOARD_SIMULATOR_KEY", secret)
    Provider.objects.update(read_timeout=0.5)  # saving bumps the table, which re-reads the key
    demo.fault(provider="aimlapi", mode="error", status=401)
    demo.fault(provider="openai", mode="reset")

    with caplog.at_level(logging.DEBUG):
        raw = openai_client.chat.completions.with_raw_response.create(
            model="summary", messages=MESSAGES
        )
        drain_ledger()

    assert raw.headers["x-switchboard-provider"] == "google"
    assert demo.calls()["google"]["last_headers"]["x-goog-api-key"] == secret
    assert secret not in caplog.text
    assert secret not in str(UsageRecord.objects.values_list())


def test_a_stream_closed_before_anyone_reads_it_still_records_and_settles(
    demo: SimulatorHandle, redis: object
) -> None:
    import asyncio
    from datetime import UTC, datetime
    from decimal import Decimal

    from billing.budgets import current_spend
    from billing.models import Budget
    from routing.client import close_engine
    from routing.schema import validate_chat_body

    budget = Budget.objects.get(scope="global")
    request = validate_chat_body({"model": "summary", "messages": MESSAGES, "stream": True})

    async def open_and_walk_away() -> None:
        try:
            answer = await EnhancedHybridAIClient().open_stream(request)
            await answer.aclose()
        finally:
            await close_engine()

    asyncio.run(open_and_walk_away())

    assert drain_ledger() == 1
    record = UsageRecord.objects.get()
    assert (record.status, record.error_code) == ("partial", "client_closed")
    spent, in_flight = current_spend(redis, budget.info(), datetime.now(UTC))
    assert (spent, in_flight) == (record.cost_usd, Decimal(0))
