"""The fault matrix: every way a provider fails, and what the client and ledger see."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
from redis import Redis

from billing.ledger import LEDGER_KEY
from billing.models import UsageRecord
from routing.models import Provider
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]

# (fault spec, outcome recorded for the failed aimlapi attempts, attempts aimlapi gets)
FAULTS = {
    "500": ({"mode": "error", "status": 500}, "transient", 2),
    "503": ({"mode": "error", "status": 503}, "transient", 2),
    "529": ({"mode": "error", "status": 529}, "transient", 2),
    "429 with Retry-After": ({"mode": "rate_limit", "retry_after": 1}, "transient", 2),
    "timeout": ({"mode": "timeout", "delay_ms": 5000}, "transient", 2),
    "connection reset": ({"mode": "reset"}, "transient", 2),
    "malformed body": ({"mode": "malformed"}, "transient", 2),
    "401 bad key": ({"mode": "error", "status": 401}, "permanent", 1),
    "403 out of credit": ({"mode": "no_credit"}, "permanent", 1),
}


@pytest.fixture
def fast_timeouts(demo: SimulatorHandle) -> SimulatorHandle:
    Provider.objects.update(read_timeout=0.5, connect_timeout=0.5)
    return demo


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_it_falls_back_to_openai_when_aimlapi_fails(
    openai_client: openai.OpenAI, fast_timeouts: SimulatorHandle, fault: tuple[dict, str, int]
) -> None:
    spec, outcome, aimlapi_attempts = fault
    fast_timeouts.fault(provider="aimlapi", **spec)

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert "openai" in raw.parse().choices[0].message.content
    assert raw.headers["x-switchboard-provider"] == "openai"
    assert raw.headers["x-switchboard-attempts"] == str(aimlapi_attempts + 1)
    assert drain_ledger() == 1
    record = UsageRecord.objects.get()
    assert [a["provider"] for a in record.attempts] == ["aimlapi"] * aimlapi_attempts + ["openai"]
    assert {a["outcome"] for a in record.attempts[:-1]} == {outcome}
    assert record.attempts[-1]["outcome"] == "ok"
    assert record.provider == "openai" and record.status == "ok"
    assert record.cost_usd == Decimal(raw.headers["x-switchboard-cost-usd"]) > 0


@pytest.mark.parametrize(
    "spec",
    [{"mode": "error", "status": 503}, {"mode": "reset"}, {"mode": "timeout", "delay_ms": 5000}],
    ids=["503", "reset", "timeout"],
)
def test_a_stream_falls_back_before_its_first_byte(
    openai_client: openai.OpenAI, fast_timeouts: SimulatorHandle, spec: dict
) -> None:
    fast_timeouts.fault(provider="aimlapi", **spec)

    stream = openai_client.chat.completions.create(model="summary", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert "openai" in text
    drain_ledger()
    record = UsageRecord.objects.get()
    assert record.provider == "openai" and record.streamed and record.status == "ok"


def test_a_stream_cut_after_the_first_byte_ends_with_an_error_event(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="stream_cut")

    stream = openai_client.chat.completions.create(model="summary", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)

    assert received, "the first chunks reached the client before the cut"
    assert "cut" in str(caught.value.message)
    assert demo.count("openai") == 0, "no fallback after the first byte"
    drain_ledger()
    record = UsageRecord.objects.get()
    assert record.status == "partial" and record.provider == "aimlapi"
    assert record.usage_estimated and record.completion_tokens > 0


def test_a_short_retry_after_is_waited_for_and_the_same_provider_retried(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="rate_limit", retry_after=1, times=1)

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert raw.headers["x-switchboard-provider"] == "aimlapi"
    assert raw.headers["x-switchboard-attempts"] == "2"
    assert raw.elapsed.total_seconds() >= 0.9


def test_a_long_retry_after_sends_the_request_to_the_next_provider_at_once(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="rate_limit", retry_after=30)

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert raw.headers["x-switchboard-provider"] == "openai"
    assert raw.headers["x-switchboard-attempts"] == "2"
    assert raw.elapsed.total_seconds() < 5


def test_when_all_four_are_down_the_client_gets_a_503_with_retry_after(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="*", mode="error", status=503)

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"]
    message = caught.value.message
    for provider in ("aimlapi", "openai", "google", "anthropic"):
        assert provider in message
    drain_ledger()
    record = UsageRecord.objects.get()
    assert record.status == "error" and record.http_status == 503
    assert record.cost_usd == 0
    assert len(record.attempts) == 8  # four providers, each tried and retried once


def test_a_request_every_provider_rejects_is_a_400_with_the_first_reason(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    long_prompt = "word " * 140_000  # past every simulated context window

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model="summary", messages=[{"role": "user", "content": long_prompt}]
        )

    assert (
        "aimlapi rejected the request: This model's maximum context length" in caught.value.message
    )
    assert caught.value.code == "context_length_exceeded"
    drain_ledger()
    record = UsageRecord.objects.get()
    # The route's four, after the long-context model the demo's rule tries first for so long
    # a transcript (the simulator's context windows are all smaller).
    assert [a["outcome"] for a in record.attempts] == ["rejected"] * 5
    assert record.attempts[0]["model"] == "gemini-1.5-pro"


def test_nothing_is_charged_twice_when_a_retry_succeeds(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    demo.fault(provider="aimlapi", mode="error", status=500, times=1)

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert raw.headers["x-switchboard-provider"] == "aimlapi"
    delivered = redis.lrange(LEDGER_KEY, 0, -1)
    assert len(delivered) == 1, "one entry for the request, not one per attempt"
    drain_ledger()
    redis.rpush(LEDGER_KEY, *delivered)  # a drain that died before trimming delivers again
    drain_ledger()
    record = UsageRecord.objects.get()
    assert len(record.attempts) == 2
    assert record.cost_usd == Decimal(raw.headers["x-switchboard-cost-usd"])


def test_a_client_that_leaves_mid_stream_stops_the_upstream_read_and_is_charged_for_what_it_got(
    gateway: str, client_key: str, demo: SimulatorHandle, redis: Redis
) -> None:
    import time

    import httpx

    demo.fault(provider="aimlapi", mode="slow_stream", delay_ms=300)
    body = {"model": "summary", "stream": True, "messages": MESSAGES}
    headers = {"Authorization": f"Bearer {client_key}"}

    with (
        httpx.Client() as client,
        client.stream("POST", f"{gateway}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    left = time.monotonic()

    while not redis.llen(LEDGER_KEY) and time.monotonic() - left < 5:
        time.sleep(0.05)
    # The whole stream would take 300 ms for each of its ~10 events.
    assert time.monotonic() - left < 1.5
    drain_ledger()
    record = UsageRecord.objects.get()
    assert (record.status, record.error_code) == ("partial", "client_closed")
    assert record.provider == "aimlapi" and record.usage_estimated
