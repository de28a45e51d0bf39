"""Hard budgets hold under concurrency: reserve the worst case, settle to the actual cost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import openai
import pytest
from redis import Redis

from billing.budgets import (
    BudgetInfo,
    current_spend,
    from_units,
    reserve_args,
    reserved_split,
    to_units,
)
from billing.models import Budget, UsageRecord
from routing.client import forget_cached_state
from routing.models import ClientKey
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def spent(redis: Redis, budget: Budget) -> tuple[Decimal, Decimal]:
    """(spent, reserved by requests in flight). The gateways' allowances (their slices of
    the headroom, routing.allowances) are reserved too, apart, and add up with them."""
    now = datetime.now(UTC)
    key = budget.info().key(now)
    by_requests, by_allowances = reserved_split(redis, budget.info(), now)
    assert from_units(int(redis.hget(key, "reserved") or 0)) == by_requests + by_allowances
    return current_spend(redis, budget.info(), now)


def key_budget(amount: Decimal) -> Budget:
    name = ClientKey.objects.get().name
    return Budget.objects.create(
        scope="key", scope_ref=name, period="monthly", amount_usd=amount, hard=True
    )


def one_cost(client: openai.OpenAI) -> Decimal:
    raw = client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, max_tokens=40
    )
    return Decimal(raw.headers["x-switchboard-cost-usd"])


def test_spend_settles_to_the_actual_cost_and_nothing_stays_reserved(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    budget = key_budget(Decimal("10"))

    costs = [one_cost(openai_client) for _ in range(3)]

    assert spent(redis, budget) == (sum(costs), Decimal(0))
    drain_ledger()
    assert sum(r.cost_usd for r in UsageRecord.objects.all()) == sum(costs)


def test_a_request_that_does_not_fit_is_refused_with_budget_exceeded(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    key_budget(Decimal("0.0000001"))

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert caught.value.code == "budget_exceeded"
    assert "key tests monthly budget" in caught.value.message
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert demo.count("aimlapi") == 0, "refused before any provider was called"
    drain_ledger()
    assert UsageRecord.objects.get().status == "rejected"


@pytest.mark.slow
def test_two_hundred_concurrent_requests_through_two_gateways_never_overspend(
    two_gateways: list[str], openai_client: openai.OpenAI, client_key: str, redis: Redis
) -> None:
    cost = one_cost(openai_client)  # before the budget exists
    budget = key_budget(cost * 50)

    async def fire() -> list[object]:
        clients = [
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
            for url in two_gateways
        ]
        try:
            calls = [
                clients[i % 2].chat.completions.create(
                    model="summary", messages=MESSAGES, max_tokens=40
                )
                for i in range(200)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            for client in clients:
                await client.close()

    results = asyncio.run(fire())

    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert 0 < len(answered) <= 50
    reasons = {f"{type(r).__name__}: {getattr(r, 'code', r)}" for r in refused}
    assert reasons == {"RateLimitError: budget_exceeded"}
    total, reserved = spent(redis, budget)
    assert total <= budget.amount_usd and reserved == 0
    assert total == cost * len(answered)


def test_a_stream_the_client_abandons_is_charged_for_what_it_got(
    gateway: str, client_key: str, demo: SimulatorHandle, redis: Redis
) -> None:
    import time

    import httpx

    budget = key_budget(Decimal("10"))
    demo.fault(provider="aimlapi", mode="slow_stream", delay_ms=200)
    body = {"model": "summary", "stream": True, "messages": MESSAGES}
    headers = {"Authorization": f"Bearer {client_key}"}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{gateway}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        next(r.iter_lines())
    deadline = time.monotonic() + 5
    while spent(redis, budget)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    drain_ledger()
    record = UsageRecord.objects.get()
    assert record.status == "partial" and record.cost_usd > 0
    assert spent(redis, budget) == (record.cost_usd, Decimal(0))


def test_a_lease_whose_holder_died_is_released_by_the_next_reservation(redis: Redis) -> None:
    budget = BudgetInfo(1, "global monthly", "global", "", "monthly", Decimal("1"), hard=True)
    now = datetime.now(UTC)
    _, held = reserve_args([budget], "dead-request", Decimal("0.9"), now - timedelta(hours=1))
    held[2] = budget.key(now)  # the same period as now, even in a month's first hour
    assert redis.execute_command("EVAL", _script(held[0]), *held[1:]) == 0

    _, fresh = reserve_args([budget], "live-request", Decimal("0.5"), now)

    assert redis.execute_command("EVAL", _script(fresh[0]), *fresh[1:]) == 0, (
        "the dead lease expired"
    )


def _script(sha: str) -> str:
    from billing.budgets import SCRIPTS

    return SCRIPTS[sha]


def premium_route() -> None:
    from routing.models import Deployment, Route, RouteStep

    route = Route.objects.create(name="premium")
    for position, provider in enumerate(["anthropic", "openai", "google"], start=1):
        RouteStep.objects.create(
            route=route,
            position=position,
            deployment=Deployment.objects.get(provider__name=provider),
        )


def test_past_its_degrade_point_a_budget_sends_the_cheapest_candidate_first(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    premium_route()
    budget = Budget.objects.create(
        scope="route", scope_ref="premium", amount_usd=Decimal("10"), hard=True, degrade_at_pct=50
    )

    def answered_by() -> str:
        raw = openai_client.chat.completions.with_raw_response.create(
            model="premium", messages=MESSAGES
        )
        return raw.headers["x-switchboard-provider"]

    assert answered_by() == "anthropic"
    redis.hincrby(budget.info().key(datetime.now(UTC)), "spent", to_units(Decimal("6")))
    forget_cached_state()  # the gateway's live numbers are a moment old: read them now

    assert answered_by() == "google"  # $0.10/$0.40 per million, the cheapest of the three
    drain_ledger()
    assert UsageRecord.objects.latest("created").context["degraded_by"] == "route premium monthly"


def test_a_degrading_budget_puts_price_first_without_undoing_the_quality_floor(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    from routing.live import QUALITY_KEY
    from routing.models import Deployment, Route

    premium_route()
    Route.objects.filter(name="premium").update(quality_floor=80)
    Route.objects.get(name="premium").save()  # a new table version
    budget = Budget.objects.create(
        scope="route", scope_ref="premium", amount_usd=Decimal("10"), hard=True, degrade_at_pct=50
    )
    redis.hincrby(budget.info().key(datetime.now(UTC)), "spent", to_units(Decimal("6")))
    google = Deployment.objects.get(provider__name="google")  # the cheapest, but poor lately
    redis.hset(QUALITY_KEY, str(google.id), "50")

    raw = openai_client.chat.completions.with_raw_response.create(
        model="premium", messages=MESSAGES
    )

    # Price first among those above the floor; google, under it, goes after them.
    assert raw.headers["x-switchboard-provider"] != "google"
    drain_ledger()
    record = UsageRecord.objects.latest("created")
    ranked = [c["deployment"] for c in record.decision["ranking"]["candidates"]]
    assert ranked[0].startswith(raw.headers["x-switchboard-provider"] + "/")  # as tried
    assert ranked[-1].startswith("google/")
    assert record.context["degraded_by"] == "route premium monthly"


def test_an_exhausted_provider_budget_skips_that_provider_without_calling_it(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    Budget.objects.create(
        scope="provider", scope_ref="aimlapi", amount_usd=Decimal("0.0000001"), hard=True
    )

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert raw.headers["x-switchboard-provider"] == "openai"
    assert demo.count("aimlapi") == 0
    drain_ledger()
    attempts = UsageRecord.objects.get().attempts
    assert [(a["provider"], a["code"]) for a in attempts] == [
        ("aimlapi", "budget_exceeded"),
        ("openai", ""),
    ]


def test_when_every_providers_budget_is_exhausted_the_request_is_refused_with_429(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    for provider in ("aimlapi", "openai", "google", "anthropic"):
        Budget.objects.create(
            scope="provider", scope_ref=provider, amount_usd=Decimal("0.0000001"), hard=True
        )

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert caught.value.code == "budget_exceeded"
    assert sum(demo.count(p) for p in ("aimlapi", "openai", "google", "anthropic")) == 0


def test_a_failed_candidate_hands_back_its_provider_reservation(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    aimlapi = Budget.objects.create(
        scope="provider", scope_ref="aimlapi", amount_usd=Decimal("1"), hard=True
    )
    demo.fault(provider="aimlapi", mode="error", status=500)

    openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert spent(redis, aimlapi) == (Decimal(0), Decimal(0))


def test_settling_after_the_lease_was_released_still_charges_the_actual_cost(
    redis: Redis,
) -> None:
    budget = BudgetInfo(2, "global monthly", "global", "", "monthly", Decimal("10"), hard=True)
    now = datetime.now(UTC)
    slow, held = reserve_args([budget], "slow-stream", Decimal("1"), now - timedelta(hours=1))
    held[2] = budget.key(now)
    redis.execute_command("EVAL", _script(held[0]), *held[1:])
    _, other = reserve_args([budget], "another", Decimal("1"), now)
    redis.execute_command("EVAL", _script(other[0]), *other[1:])  # releases the slow lease

    settle = slow.settle_args(Decimal("0.5"))
    settle[2] = budget.key(now)
    redis.execute_command("EVAL", _script(settle[0]), *settle[1:])

    assert current_spend(redis, budget, now) == (Decimal("0.5"), Decimal("1"))


def test_a_cancelled_request_hands_back_its_reservation(
    demo: SimulatorHandle, redis: Redis
) -> None:
    from routing.client import EnhancedHybridAIClient, close_engine

    global_budget = Budget.objects.get(scope="global")
    demo.fault(provider="aimlapi", mode="slow", delay_ms=3000)

    async def cancel_midway() -> tuple[Decimal, Decimal]:
        try:
            task = asyncio.create_task(
                EnhancedHybridAIClient().acomplete(model="summary", messages=MESSAGES)
            )
            await asyncio.sleep(0.5)
            held_while_running = spent(redis, global_budget)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return held_while_running
        finally:
            await close_engine()

    _, in_flight = asyncio.run(cancel_midway())

    assert in_flight > 0, "the request held a reservation while it ran"
    assert spent(redis, global_budget) == (Decimal(0), Decimal(0))


def test_a_request_its_keys_rate_limit_refuses_leaves_no_budget_reserved(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    # The admission and the reservation share one Redis round trip: a refused key
    # must hand the reservation back.
    budget = key_budget(Decimal("10"))
    key = ClientKey.objects.get()
    key.rpm, key.burst = 1, 0
    key.save()
    cost = one_cost(openai_client)

    with pytest.raises(openai.RateLimitError) as caught:
        one_cost(openai_client)

    assert caught.value.code == "rate_limit_exceeded"
    assert spent(redis, budget) == (cost, Decimal(0))
