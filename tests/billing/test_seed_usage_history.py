"""The demo's usage history: a month of traffic, priced exactly, never written twice."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import override_settings

from billing.forecast import project_month
from billing.management.commands.seed_usage_history import (
    DAYS,
    MONTHLY_USD,
    REQUESTS_PER_DAY,
    history,
)
from billing.models import UsageRecord

NOW = datetime(2026, 11, 27, 7, 36, tzinfo=UTC)
# (input, output, direct input, direct output) USD per million tokens: routing/demo/demo.yaml,
# and the vendors' list prices of the same models.
PRICES = {
    ("aimlapi", "gpt-4o-mini"): ("0.06", "0.24", "0.15", "0.60"),
    ("openai", "gpt-4o-mini"): ("0.15", "0.60", "0.15", "0.60"),
    ("google", "gemini-2.0-flash"): ("0.10", "0.40", "0.10", "0.40"),
    ("anthropic", "claude-3-5-haiku-latest"): ("0.80", "4.00", "0.80", "4.00"),
}

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = io.StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("seed_usage_history", "--requests-per-day", "60", *args, stdout=out)
    return out.getvalue()


def at(price: str, tokens: int) -> Decimal:
    return Decimal(price) * tokens / 1_000_000


def test_it_writes_a_month_of_history_up_to_now_with_demo_request_ids() -> None:
    output = seed()

    records = list(UsageRecord.objects.all())
    assert f"Demo usage history: {len(records)} requests over 30 days" in output
    assert 1000 < len(records) < 2000
    assert all(r.request_id.startswith("demo-") for r in records)
    assert min(r.created for r in records) >= datetime(2026, 10, 29, tzinfo=UTC)
    assert max(r.created for r in records) < NOW
    assert {r.route for r in records} == {"summary", "action-items", "sentiment", "live-assist"}


def test_every_cost_is_the_rows_tokens_at_the_demos_prices_to_the_last_digit() -> None:
    seed()

    for r in UsageRecord.objects.all():
        if r.status == "error":
            assert r.cost_usd == 0 and r.direct_cost_usd is None and len(r.attempts) == 4
            continue
        price_in, price_out, direct_in, direct_out = PRICES[(r.provider, r.model)]
        assert r.cost_usd == at(price_in, r.prompt_tokens) + at(price_out, r.completion_tokens)
        assert r.direct_cost_usd == at(direct_in, r.prompt_tokens) + at(
            direct_out, r.completion_tokens
        )
        assert isinstance(r.cost_usd, Decimal)
        assert r.attempts[-1]["provider"] == r.provider and r.attempts[-1]["outcome"] == "ok"


def test_traffic_is_mostly_aimlapi_and_quieter_at_weekends() -> None:
    seed()
    records = list(UsageRecord.objects.filter(status="ok"))

    providers = Counter(r.provider for r in records)
    per_day = Counter(r.created.date() for r in records if r.created.date() < NOW.date())

    assert providers["aimlapi"] / len(records) > 0.85
    assert providers["openai"] and providers["google"] and providers["anthropic"]
    weekend = [n for day, n in per_day.items() if day.weekday() >= 5]
    weekday = [n for day, n in per_day.items() if day.weekday() < 5]
    assert sum(weekend) / len(weekend) < 0.6 * sum(weekday) / len(weekday)


def test_running_it_again_replaces_the_demo_rows_and_keeps_real_ones() -> None:
    UsageRecord.objects.create(request_id="real-1", cost_usd=Decimal(1), status="ok")
    seed()
    first = sorted(UsageRecord.objects.values_list("request_id", "cost_usd"))

    output = seed()

    assert sorted(UsageRecord.objects.values_list("request_id", "cost_usd")) == first
    assert f"replaced {len(first) - 1} earlier demo rows" in output
    assert UsageRecord.objects.filter(request_id="real-1").exists()


def test_the_history_spends_the_monthly_rate_asked_for() -> None:
    seed("--monthly-usd", "1500")

    spent = sum(r.cost_usd for r in UsageRecord.objects.all())
    span = Decimal((NOW - datetime(2026, 10, 29, tzinfo=UTC)).total_seconds()) / 86400
    # Token counts are whole numbers, so the rows spend a hair under the target.
    assert Decimal(1500) * span / 30 * Decimal("0.99") < spent <= Decimal(1500) * span / 30


def test_with_its_defaults_the_demo_month_forecasts_60_to_80_percent_of_its_budget() -> None:
    for now in (NOW, NOW + timedelta(days=13)):  # late November, early December
        per_day: dict[date, Decimal] = defaultdict(Decimal)
        for r in history(now, DAYS, REQUESTS_PER_DAY, MONTHLY_USD):
            per_day[r.created.date()] += r.cost_usd
        elapsed = Decimal(now.hour * 3600 + now.minute * 60) / 86400

        forecast = project_month(per_day, now.date(), elapsed, Decimal(5000))

        assert forecast.uses_seasonality
        assert forecast.projected_pct is not None and 60 <= forecast.projected_pct <= 80


def test_it_refuses_to_touch_a_production_ledger() -> None:
    with override_settings(PRODUCTION=True), pytest.raises(CommandError):
        seed()
