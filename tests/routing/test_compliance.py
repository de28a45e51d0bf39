"""Healthcare data goes only to BAA providers, EU-only data only to EU ones; else nowhere.

In the demo configuration Anthropic has a signed BAA and Google processes data in the EU.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from redis import Redis

from routing.breaker import KEY as BREAKER_KEY
from routing.models import Deployment, Provider
from tests.factories import chat
from tests.servers import SimulatorHandle

PROVIDERS = ("aimlapi", "openai", "google", "anthropic")


def ask(client: openai.OpenAI, **metadata: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="summary", metadata=metadata, **chat()
    )
    return raw.headers["x-switchboard-provider"]


def total_calls(simulator: SimulatorHandle) -> int:
    return sum(simulator.count(provider) for provider in PROVIDERS)


def open_breaker(redis: Redis, provider: str) -> None:
    """As after a run of failures: open, and not due a trial for a while."""
    import time

    deployment = Deployment.objects.get(provider__name=provider)
    redis.hset(
        BREAKER_KEY.format(deployment.id),
        mapping={"state": "open", "opened_at": time.time(), "consecutive": 5},
    )


def test_a_healthcare_request_skips_every_provider_without_a_baa(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    assert ask(openai_client, industry="healthcare") == "anthropic"
    assert total_calls(demo) == demo.count("anthropic") == 1
    assert ask(openai_client, industry="sales") == "aimlapi"  # others route as usual


def test_an_eu_only_request_goes_to_eu_providers_only(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    assert ask(openai_client, data_region="eu") == "google"
    assert total_calls(demo) == 1


def test_the_context_can_come_from_headers(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {client_key}", "X-Switchboard-Industry": "healthcare"},
        json={"model": "summary", **chat()},
    )
    assert response.headers["x-switchboard-provider"] == "anthropic"


def test_healthcare_with_only_non_baa_providers_healthy_is_refused_and_nothing_is_sent(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    open_breaker(redis, "anthropic")

    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(openai_client, industry="healthcare")

    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "no_compliant_provider"
    assert "unavailable" in error["message"] and "Nothing was sent" in error["message"]
    assert total_calls(demo) == 0


def test_a_route_with_no_compliant_provider_at_all_is_refused(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    Provider.objects.filter(name="anthropic").update(baa_signed=False)
    Provider.objects.get(name="anthropic").save()  # update() sends no signal

    with pytest.raises(openai.PermissionDeniedError, match="none of the providers of 'summary'"):
        ask(openai_client, industry="healthcare", data_region="eu")
    assert total_calls(demo) == 0


def test_a_failing_baa_provider_does_not_fall_back_to_the_others(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="anthropic", mode="error", status=500)

    with pytest.raises(openai.InternalServerError):
        ask(openai_client, industry="healthcare")
    assert total_calls(demo) == demo.count("anthropic") > 0
