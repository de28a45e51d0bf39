"""Plan pricing: the allowance at its amortised rate, then overage by volume tier."""

from __future__ import annotations

from decimal import Decimal

from billing.plans import PlanInfo, Tier

ENTERPRISE = PlanInfo(
    provider="aimlapi",
    monthly_fee_usd=Decimal("200"),
    included_tokens=400_000_000,
    overage_usd_per_mtok=Decimal("0.60"),
    tiers=(Tier(1_000_000_000, Decimal("0.45")),),
)


def test_tokens_inside_the_allowance_cost_the_amortised_rate() -> None:
    assert ENTERPRISE.included_rate_per_mtok == Decimal("0.5")
    assert ENTERPRISE.cost(0, 1_000_000) == Decimal("0.5")


def test_the_whole_allowance_costs_the_monthly_fee() -> None:
    assert ENTERPRISE.cost(0, 400_000_000) == Decimal("200")


def test_a_call_across_the_allowance_is_split_between_the_rates() -> None:
    # 1M inside at $0.50/M, 1M outside at $0.60/M
    assert ENTERPRISE.cost(399_000_000, 2_000_000) == Decimal("1.1")


def test_volume_tiers_lower_the_overage_price_past_their_threshold() -> None:
    assert ENTERPRISE.cost(999_000_000, 2_000_000) == Decimal("1.05")  # 0.60 + 0.45
    assert ENTERPRISE.cost(2_000_000_000, 1_000_000) == Decimal("0.45")


def test_the_worst_rate_bounds_a_reservation() -> None:
    assert ENTERPRISE.highest_rate_per_mtok() == Decimal("0.60")


def test_a_providers_plan_prices_its_calls_against_the_months_running_total(
    demo: object, redis: object
) -> None:
    from django.utils import timezone

    from billing.models import UsageRecord
    from routing.client import EnhancedHybridAIClient
    from routing.models import Provider, ProviderPlan
    from tests.factories import drain_ledger

    ProviderPlan.objects.create(
        provider=Provider.objects.get(name="aimlapi"),
        monthly_fee_usd=Decimal("200"),
        included_tokens=400_000_000,
        overage_usd_per_mtok=Decimal("0.60"),
    )
    key = ENTERPRISE.key(timezone.now())
    messages = [{"role": "user", "content": "Summarise the call."}]

    EnhancedHybridAIClient().complete(model="summary", messages=messages)
    redis.set(key, 400_000_000)  # type: ignore[attr-defined]  # the allowance is used up
    EnhancedHybridAIClient().complete(model="summary", messages=messages)

    drain_ledger()
    inside, outside = UsageRecord.objects.order_by("created")
    tokens = inside.prompt_tokens + inside.completion_tokens
    assert inside.cost_usd == ENTERPRISE.cost(0, tokens)
    assert outside.cost_usd == ENTERPRISE.cost(400_000_000, tokens)
    assert outside.cost_usd > inside.cost_usd
    assert int(redis.get(key)) == 400_000_000 + tokens  # type: ignore[attr-defined]
