"""Month-end projections: a known month recovered, sensible fallbacks, the ledger read by scope."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.budgets import BudgetInfo
from billing.forecast import daily_spend, forecast_budget, project_day, project_month
from billing.models import UsageRecord

MARCH = date(2026, 3, 1)  # 31 days, starting on a Sunday


def synthetic_spend(day: date) -> Decimal:
    """A known month: growing by $2 a day from $100, weekends 40% quieter."""
    spend = Decimal(100 + 2 * day.day)
    return spend * Decimal("0.6") if day.weekday() >= 5 else spend


def month_of(first: date) -> list[date]:
    return [first + timedelta(n) for n in range(calendar.monthrange(first.year, first.month)[1])]


def test_a_projection_on_day_20_lands_within_5_percent_of_the_true_month_total() -> None:
    days = month_of(MARCH)
    truth = sum(synthetic_spend(day) for day in days)
    history = {day: synthetic_spend(day) for day in days[:19]}

    forecast = project_month(history, date(2026, 3, 20), Decimal(0), Decimal(5000))

    assert forecast.uses_seasonality
    assert abs(forecast.projected_total - truth) / truth < Decimal("0.05")
    assert forecast.spent_to_date == sum(history.values())
    assert [p.day for p in forecast.points] == days
    assert forecast.points[-1].cumulative == forecast.projected_total
    # The pattern carries into the forecast: the last Saturday expects less than the Friday.
    friday, saturday = forecast.points[26], forecast.points[27]
    assert saturday.expected < friday.expected * Decimal("0.7")


def test_it_flags_an_overrun_only_when_the_projection_exceeds_the_budget() -> None:
    history = {day: synthetic_spend(day) for day in month_of(MARCH)[:19]}
    today = date(2026, 3, 20)

    assert project_month(history, today, Decimal(0), Decimal(3000)).will_overrun
    assert not project_month(history, today, Decimal(0), Decimal(5000)).will_overrun
    assert not project_month(history, today, Decimal(0), None).will_overrun


def test_with_under_two_weeks_of_history_it_projects_the_last_weeks_mean_flat() -> None:
    history = {day: synthetic_spend(day) for day in month_of(MARCH)[:9]}
    last_week = [synthetic_spend(day) for day in month_of(MARCH)[2:9]]
    mean = sum(last_week) / 7

    forecast = project_month(history, date(2026, 3, 10), Decimal(0))

    assert not forecast.uses_seasonality
    assert forecast.method == "mean of the last 7 days"
    assert forecast.projected_total == (sum(history.values()) + mean * 22).quantize(
        Decimal("1e-10")
    )


def test_with_no_complete_day_it_projects_todays_rate() -> None:
    today = date(2026, 3, 1)
    forecast = project_month({today: Decimal(10)}, today, Decimal("0.25"))

    # $10 in the first 6 hours is $40 a day: $30 more today, then 30 days at $40.
    assert forecast.method == "today's rate"
    assert forecast.spent_to_date == Decimal(10)
    assert forecast.projected_total == Decimal(10 + 30 + 30 * 40)
    assert project_month({}, today, Decimal("0.5")).projected_total == 0


def test_history_before_the_month_feeds_the_pattern_but_not_the_spend() -> None:
    april = date(2026, 4, 1)
    history = {april - timedelta(n): Decimal(100) for n in range(1, 29)}
    history[april] = Decimal(100)
    history[april + timedelta(1)] = Decimal(100)

    forecast = project_month(history, april + timedelta(2), Decimal(0))

    assert forecast.uses_seasonality
    assert forecast.spent_to_date == Decimal(200)
    assert forecast.projected_total == Decimal(3000)  # a flat $100 a day, 30 days


def test_a_daily_budget_projects_todays_rate_to_midnight_from_at_least_an_hour() -> None:
    today = date(2026, 3, 20)

    quarter_day = project_day(Decimal(3), today, Decimal("0.25"), Decimal(10))
    first_minute = project_day(Decimal(1), today, Decimal(1) / 1440)

    assert quarter_day.projected_total == Decimal(12) and quarter_day.will_overrun
    assert first_minute.projected_total == Decimal(24)


def record(request_id: str, created: datetime, cost: str, **fields: str) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=request_id,
        created=created,
        cost_usd=Decimal(cost),
        status="ok",
        **{"client_key_name": "crm", "route": "summary", "provider": "aimlapi", **fields},
    )


@pytest.mark.django_db
def test_the_ledger_reader_sums_each_scope_by_utc_day() -> None:
    day = datetime(2026, 3, 10, tzinfo=UTC)
    record("a", day.replace(hour=0, minute=0, second=1), "1.25")
    record("b", day.replace(hour=23, minute=59, second=59), "2.5", provider="openai")
    record("c", day + timedelta(days=1), "4", client_key_name="helpdesk")
    record("d", day - timedelta(days=1), "8", route="sentiment")
    start, end = day - timedelta(days=5), day + timedelta(days=5)

    assert daily_spend("global", "", start, end) == {
        date(2026, 3, 9): Decimal(8),
        date(2026, 3, 10): Decimal("3.75"),
        date(2026, 3, 11): Decimal(4),
    }
    assert daily_spend("key", "crm", start, end) == {
        date(2026, 3, 9): Decimal(8),
        date(2026, 3, 10): Decimal("3.75"),
    }
    assert daily_spend("route", "sentiment", start, end) == {date(2026, 3, 9): Decimal(8)}
    assert daily_spend("provider", "openai", start, end) == {date(2026, 3, 10): Decimal("2.5")}
    assert daily_spend("key", "nobody", start, end) == {}


@pytest.mark.django_db
def test_a_budgets_forecast_counts_this_periods_records_of_its_scope() -> None:
    record("last-month", datetime(2026, 2, 28, 12, tzinfo=UTC), "50")
    record("yesterday", datetime(2026, 3, 9, 12, tzinfo=UTC), "20")
    record("this-morning", datetime(2026, 3, 10, 5, tzinfo=UTC), "3")
    record("other-route", datetime(2026, 3, 10, 5, tzinfo=UTC), "100", route="sentiment")
    monthly = BudgetInfo(
        1, "route summary monthly", "route", "summary", "monthly", Decimal(500), True
    )
    daily = BudgetInfo(2, "route summary daily", "route", "summary", "daily", Decimal(10), True)

    with time_machine.travel(datetime(2026, 3, 10, 6, tzinfo=UTC), tick=False):
        month = forecast_budget(monthly)
        day = forecast_budget(daily)

    assert month.spent_to_date == Decimal(23)
    assert month.points[9].actual == Decimal(3)
    assert not month.uses_seasonality
    assert day.spent_to_date == Decimal(3)
    assert day.projected_total == Decimal(12) and day.will_overrun
