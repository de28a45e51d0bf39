"""Watching budgets: threshold crossings, reconciliation with the ledger, spend anomalies.

Run by periodic jobs (billing.jobs). A crossing becomes an outbox alert keyed
by (budget, period, threshold), so it is sent once per period however many
workers check it and however often.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from billing.budgets import LEDGER_FIELD_BY_SCOPE, BudgetInfo, current_spend, to_units
from billing.forecast import forecast_budget
from billing.models import Budget, UsageRecord
from project.alerts import raise_alert
from project.incidents import open_incident_once

ANSWERED = ("ok", "partial")


def scope_filter(budget: BudgetInfo) -> Q:
    """The ledger rows a budget counts."""
    field = LEDGER_FIELD_BY_SCOPE.get(budget.scope)
    return Q(**{field: budget.scope_ref}) if field else Q()


def ledger_spend(budget: BudgetInfo, now: datetime) -> Decimal:
    total = UsageRecord.objects.filter(
        scope_filter(budget),
        status__in=ANSWERED,
        created__gte=budget.period_start(now),
        created__lt=budget.period_end(now),
    ).aggregate(total=Sum("cost_usd"))["total"]
    return total or Decimal(0)


@dataclass(frozen=True)
class Crossing:
    budget: Budget
    threshold: int
    spent: Decimal


def check_thresholds(redis: Any, now: datetime | None = None) -> list[Crossing]:
    """Alert every threshold each budget has crossed this period (once per period)."""
    now = now or timezone.now()
    raised = []
    for budget in Budget.objects.all():
        info = budget.info()
        spent, _ = current_spend(redis, info, now)
        if not budget.amount_usd:
            continue
        used_pct = spent / budget.amount_usd * 100
        for threshold in sorted(budget.alert_at):
            if used_pct < threshold:
                break
            _, created = raise_alert(
                "budget_threshold",
                f"budget:{budget.pk}",
                f"The {info.label} budget is {used_pct:.1f}% used "
                f"(${spent:.2f} of ${budget.amount_usd:.2f})",
                severity="critical" if threshold >= 95 else "warning",
                period=info.period_key(now),
                threshold=threshold,
                body=(
                    f"Spend on the {info.label} budget passed {threshold}% at "
                    f"{now:%Y-%m-%d %H:%M} UTC. "
                    + (
                        "Calls that do not fit are refused."
                        if budget.hard
                        else "It is a soft budget."
                    )
                ),
                data={"budget_id": budget.pk, "spent_usd": str(spent), "threshold": threshold},
            )
            if created:
                raised.append(Crossing(budget, threshold, spent))
        if budget.hard and used_pct >= 100:  # calls are refused now: an incident, once a period
            open_incident_once(
                "budget_exceeded",
                f"budget:{budget.pk}:{info.period_key(now)}",
                f"The {info.label} budget is exhausted (${spent:.2f} of ${budget.amount_usd:.2f})",
                severity="critical",
                summary=f"Calls that would spend more are refused with 429 until the period "
                f"resets ({info.period_key(now)}).",
                data={"budget_id": budget.pk, "spent_usd": str(spent)},
            )
    return raised


def check_forecasts(now: datetime | None = None) -> list[Budget]:
    """Alert once per period each budget whose month-end projection passes its amount."""
    now = now or timezone.now()
    alerted = []
    for budget in Budget.objects.all():
        info = budget.info()
        forecast = forecast_budget(info, now)
        if not forecast.will_overrun:
            continue
        _, created = raise_alert(
            "budget_forecast",
            f"budget:{budget.pk}",
            f"The {info.label} budget is projected to reach ${forecast.projected_total:.2f} "
            f"({forecast.projected_pct}% of ${budget.amount_usd:.2f}) by the end of the period",
            severity="warning",
            period=info.period_key(now),
            threshold="projected_overrun",
            body=f"${forecast.spent_to_date:.2f} spent so far; method: {forecast.method}.",
            data={
                "budget_id": budget.pk,
                "spent_usd": str(forecast.spent_to_date),
                "projected_usd": str(forecast.projected_total),
            },
        )
        if created:
            alerted.append(budget)
    return alerted


def reconcile(redis: Any, now: datetime | None = None) -> dict[int, Decimal]:
    """Bring Redis up to the ledger where it fell behind (a Redis restart or flush).

    Redis normally runs ahead of the ledger (the drain lags a few seconds), so it
    is only ever raised to the ledger's figure, never lowered. Returns the
    corrections made, per budget.
    """
    now = now or timezone.now()
    corrections = {}
    for budget in Budget.objects.all():
        info = budget.info()
        in_ledger = ledger_spend(info, now)
        spent, _ = current_spend(redis, info, now)
        if in_ledger > spent:
            redis.hincrby(info.key(now), "spent", to_units(in_ledger - spent))
            corrections[budget.pk] = in_ledger - spent
    return corrections


# Hourly spend this many times its trailing average, over at least MIN_HOURS of history.
ANOMALY_FACTOR = Decimal(3)
ANOMALY_MIN_SPEND = Decimal("1")  # below this an hour is noise, not an anomaly
BASELINE_HOURS = 24 * 7


def check_anomaly(now: datetime | None = None) -> bool:
    """Alert when the last hour's spend is far above the trailing week's hourly average."""
    now = now or timezone.now()
    hour_start = now - timedelta(hours=1)
    records = UsageRecord.objects.filter(status__in=ANSWERED)
    last_hour = records.filter(created__gte=hour_start, created__lt=now).aggregate(
        total=Sum("cost_usd")
    )["total"] or Decimal(0)
    baseline_start = hour_start - timedelta(hours=BASELINE_HOURS)
    history = records.filter(created__gte=baseline_start, created__lt=hour_start).aggregate(
        total=Sum("cost_usd")
    )["total"] or Decimal(0)
    baseline = history / BASELINE_HOURS
    if last_hour < ANOMALY_MIN_SPEND or last_hour < baseline * ANOMALY_FACTOR:
        return False
    _, created = raise_alert(
        "spend_anomaly",
        "spend:hourly",
        f"Spend in the last hour (${last_hour:.2f}) is "
        f"{last_hour / max(baseline, Decimal('0.01')):.0f}x the trailing hourly average "
        f"(${baseline:.2f})",
        severity="warning",
        period=hour_start.strftime("%Y-%m-%dT%H"),
        data={"last_hour_usd": str(last_hour), "baseline_hourly_usd": str(baseline)},
    )
    return created
