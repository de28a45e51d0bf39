"""Single-flight: identical requests in flight at once make one provider call, across processes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import openai
import pytest
from django.conf import settings
from django.test import override_settings

from billing.models import UsageRecord
from routing.cache import CacheKey, scope_of
from routing.models import ClientKey
from routing.schema import validate_chat_body
from routing.singleflight import LOCK
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]
BODY = {"model": "summary", "messages": MESSAGES, "temperature": 0}


async def identical(urls: list[str], key: str, count: int) -> list[Any]:
    clients = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) for url in urls]
    try:
        calls = [
            clients[i % len(clients)].chat.completions.with_raw_response.create(**BODY)
            for i in range(count)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


def lock_key() -> str:
    """The lock an identical request's leader holds (the demo key, route summary)."""
    key = CacheKey.of(
        scope_of(ClientKey.objects.get().id, "prod"), "summary", validate_chat_body(dict(BODY))
    )
    return LOCK.format(scope=key.scope, digest=key.digest)


@pytest.mark.slow
def test_fifty_identical_concurrent_requests_reach_the_provider_once_across_two_gateways(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    # The leader's call takes a while, so every other request arrives while it is in flight.
    demo.fault(provider="aimlapi", mode="slow", delay_ms=1500, times=1)

    results = asyncio.run(identical(two_gateways, client_key, 50))

    assert not [r for r in results if isinstance(r, Exception)]
    assert demo.count("aimlapi") == 1
    bodies = {r.parse().choices[0].message.content for r in results}
    assert len(bodies) == 1
    deduplicated = [r for r in results if r.headers.get("x-switchboard-deduplicated") == "true"]
    assert len(deduplicated) == 49
    assert {r.headers["x-switchboard-cost-usd"] for r in deduplicated} == {"0"}

    client = openai.OpenAI(base_url=f"{two_gateways[1]}/v1", api_key=client_key, max_retries=0)
    with client:
        after = client.chat.completions.with_raw_response.create(**BODY)
    assert after.headers["x-switchboard-cache"] == "hit"
    assert after.headers["x-switchboard-cost-usd"] == "0"
    assert demo.count("aimlapi") == 1

    assert drain_ledger() == 51
    leader = UsageRecord.objects.get(deduplicated=False, cache_hit=False)
    followers = UsageRecord.objects.filter(deduplicated=True)
    assert followers.count() == 49
    assert {r.cost_usd for r in followers} == {0}
    assert {r.context["answer_of"] for r in followers} == {leader.request_id}
    assert leader.cost_usd > 0
    assert UsageRecord.objects.get(cache_hit=True).cost_usd == 0


def test_a_follower_gives_up_at_its_own_deadline_and_the_leader_still_answers(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="slow", delay_ms=2500, times=1)
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=client_key, max_retries=0)
    led: dict[str, Any] = {}

    def lead() -> None:
        led["answer"] = client.chat.completions.with_raw_response.create(**BODY)

    leader = threading.Thread(target=lead)
    leader.start()
    time.sleep(0.5)  # the leader holds the lock and waits on the provider
    short = {**settings.SWITCHBOARD, "REQUEST_DEADLINE_SECONDS": 1}
    started = time.monotonic()
    with override_settings(SWITCHBOARD=short), pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**BODY)
    waited = time.monotonic() - started
    leader.join(timeout=10)
    client.close()

    assert caught.value.status_code == 504
    assert caught.value.code == "deadline_exceeded"
    assert 0.9 <= waited < 2.0
    assert led["answer"].headers["x-switchboard-provider"] == "aimlapi"
    assert demo.count("aimlapi") == 1
    drain_ledger()
    timed_out = UsageRecord.objects.get(status="error")
    assert (timed_out.http_status, timed_out.deduplicated) == (504, True)


def test_when_the_leaders_process_dies_a_follower_takes_over_after_the_lock_expires(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Any
) -> None:
    # A leader whose process died: its lock is left, and nobody renews it.
    redis.set(lock_key(), "dead-leader", px=1000)
    started = time.monotonic()

    raw = openai_client.chat.completions.with_raw_response.create(**BODY)

    assert 0.9 <= time.monotonic() - started < 3
    assert raw.headers["x-switchboard-cache"] == "miss"
    assert "x-switchboard-deduplicated" not in raw.headers
    assert demo.count("aimlapi") == 1
    assert not redis.exists(lock_key())  # its own lock, freed with its usage entry


def test_a_leader_that_is_cancelled_lets_its_followers_take_over_at_once(
    demo: SimulatorHandle,
) -> None:
    from routing.client import EnhancedHybridAIClient, close_engine

    demo.fault(provider="aimlapi", mode="slow", delay_ms=1500, times=1)
    client = EnhancedHybridAIClient()

    async def cancel_the_leader() -> tuple[dict[str, Any], float]:
        try:
            leader = asyncio.create_task(client.acomplete(**BODY))
            await asyncio.sleep(0.3)
            follower = asyncio.create_task(client.acomplete(**BODY))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            leader.cancel()
            answer = await follower
            return answer, time.monotonic() - started
        finally:
            await close_engine()

    answer, waited = asyncio.run(cancel_the_leader())

    assert answer["choices"][0]["message"]["content"]
    assert waited < 1.0, "the follower did not wait for the leader's lock to expire"
    assert demo.count("aimlapi") == 2


def test_a_leaders_failure_is_every_followers_answer(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    # AIMLAPI asks for 0.8 s and fails again; the others refuse at once.
    demo.fault(provider="aimlapi", mode="rate_limit", retry_after=0.8)
    demo.fault(provider="*", mode="error", status=401)

    results = asyncio.run(identical([gateway], client_key, 5))

    assert {type(r) for r in results} == {openai.InternalServerError}
    assert {r.code for r in results} == {"all_providers_failed"}
    # One request tried each provider (AIMLAPI twice); the others waited for its outcome.
    assert [demo.count(p) for p in ("aimlapi", "openai", "google", "anthropic")] == [2, 1, 1, 1]
    drain_ledger()
    assert UsageRecord.objects.filter(deduplicated=True, status="error").count() == 4


def test_requests_that_sample_are_never_merged(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="slow", delay_ms=500, times=1)

    async def sampled() -> list[Any]:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway}/v1", api_key=client_key, max_retries=0
        ) as client:
            calls = [
                client.chat.completions.create(model="summary", messages=MESSAGES, temperature=1)
                for _ in range(3)
            ]
            return await asyncio.gather(*calls)

    asyncio.run(sampled())

    assert demo.count("aimlapi") == 3
