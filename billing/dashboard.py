"""What the spend dashboard draws, read from the ledger: this month's spend and forecast
against the global budget, spend by provider and model, and savings day by day.

Amounts leave as Decimals rounded for display; the page's JSON encoder writes them
as strings, which Chart.js reads as numbers, so no float touches the money.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from billing import reports
from billing.forecast import Forecast, forecast_budget, forecast_spend
from billing.models import Budget, UsageRecord

SAVINGS_DAYS = 30
CHART_PLACES = Decimal("0.0001")  # demo calls cost fractions of a cent


def chart(amount: Decimal) -> Decimal:
    return amount.quantize(CHART_PLACES)


def global_budget() -> Budget | None:
    return Budget.objects.filter(scope=Budget.Scope.GLOBAL, period=Budget.Period.MONTHLY).first()


def month_spend(forecast: Forecast, budget: Budget | None, today: date) -> dict[str, Any]:
    """Day by day and cumulative, with the budget's even daily allowance to compare."""
    points = forecast.points
    allowance = budget.amount_usd / len(points) if budget else None
    # The actual line stops at today; the projected one runs on to the month's end.
    actual_total = Decimal(0)
    cumulative_actual: list[Decimal | None] = []
    for point in points:
        actual_total += point.actual
        cumulative_actual.append(chart(actual_total) if point.day <= today else None)
    return {
        "labels": [p.day.isoformat() for p in points],
        "actual": [chart(p.actual) for p in points],
        "expected": [chart(p.expected) for p in points],
        "cumulative_actual": cumulative_actual,
        "cumulative_projected": [chart(p.cumulative) for p in points],
        "allowance": [] if allowance is None else [chart(allowance)] * len(points),
        "budget_pace": (
            [] if allowance is None else [chart(allowance * n) for n in range(1, len(points) + 1)]
        ),
    }


def spend_by(records: QuerySet[UsageRecord], *fields: str) -> dict[str, list[Any]]:
    # Failed requests answered by nobody and cost nothing: no slice for them.
    rows = (
        records.values(*fields)
        .annotate(spent=Sum("cost_usd"))
        .filter(spent__gt=0)
        .order_by("-spent")
    )
    return {
        "labels": ["/".join(row[f] or "(none)" for f in fields) for row in rows],
        "spent": [chart(row["spent"] or Decimal(0)) for row in rows],
    }


def savings_by_day(now: datetime) -> dict[str, list[Any]]:
    start = datetime.combine(now.date() - timedelta(SAVINGS_DAYS - 1), time.min, tzinfo=UTC)
    rows, _ = reports.savings("day", start)
    rows.reverse()  # the report is newest first; the chart reads left to right
    return {
        "labels": [row.bucket for row in rows],
        "actual": [chart(row.priced_actual_usd) for row in rows],
        "direct": [chart(row.direct_usd) for row in rows],
    }


def dashboard(now: datetime | None = None) -> dict[str, Any]:
    """The page's context: headline figures, a forecast per budget, and the charts' data."""
    now = (now or timezone.now()).astimezone(UTC)
    budget = global_budget()
    forecast = forecast_spend("global", budget_usd=budget.amount_usd if budget else None, now=now)
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    last = calendar.monthrange(now.year, now.month)[1]
    this_month = UsageRecord.objects.filter(
        created__gte=month_start, created__lt=month_start + timedelta(days=last)
    )
    return {
        "month": now.strftime("%B %Y"),
        "budget": budget,
        "forecast": forecast,
        "budgets": [(b, forecast_budget(b.info(), now)) for b in Budget.objects.all()],
        "data": {
            "month": month_spend(forecast, budget, now.date()),
            "budget_usd": chart(budget.amount_usd) if budget else None,
            "by_provider": spend_by(this_month, "provider"),
            "by_model": spend_by(this_month, "provider", "model"),
            "savings": savings_by_day(now),
        },
    }
