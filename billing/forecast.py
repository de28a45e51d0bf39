"""Where a budget's spend will land at the end of its period, from the ledger so far.

Monthly budgets: the projection is the spend so far plus the expected spend of
every day left (the rest of today included). A day's expected spend is a
least-squares linear trend fitted to the last 14 complete days, so growth
carries on instead of being averaged away, times that weekday's seasonality
factor. The factors need two full weeks of history to mean anything; with less,
the expectation is the flat mean of the last 7 complete days, and with no
complete day at all, today's rate so far.

Seasonality is multiplicative (busy weekdays, quiet weekends): a weekday's
factor is the mean of its days' ratio to the fitted trend over the last whole
weeks (up to eight), normalised so the seven factors average 1. Ratios to the
trend rather than to the plain mean keep a steep month from reading its growth
as "Fridays are busy".

Daily budgets: spent * 24 h / hours elapsed, with at least an hour elapsed, so
one call a minute after midnight does not project a thousandfold day.

Money stays Decimal throughout, the fitting included (its sums are exact enough
at 28 digits); results are quantized to the money quantum.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.budgets import LEDGER_FIELD_BY_SCOPE, BudgetInfo
from billing.models import UsageRecord
from billing.money import quantize

TREND_DAYS = 14
SEASONALITY_MIN_DAYS = 14  # two of each weekday, or one bad Tuesday is "Tuesdays"
SEASONALITY_MAX_DAYS = 56  # recent enough to follow a change in the pattern
AVERAGE_DAYS = 7
MIN_ELAPSED = Decimal(1) / 24
ZERO = Decimal(0)
ONE = Decimal(1)

# The ledger column each budget scope filters on (BudgetInfo.applies_to, by value).
SCOPE_FIELDS = LEDGER_FIELD_BY_SCOPE


@dataclass(frozen=True)
class ForecastPoint:
    day: date
    actual: Decimal  # recorded spend (today: so far; future days: 0)
    expected: Decimal  # spend still expected (past days: 0; today: its remaining part)
    cumulative: Decimal  # period total up to the end of this day, actual then projected


@dataclass(frozen=True)
class Forecast:
    period: str  # monthly | daily
    budget_usd: Decimal | None
    spent_to_date: Decimal
    projected_total: Decimal
    points: tuple[ForecastPoint, ...]
    uses_seasonality: bool
    method: str  # how the expected days were estimated, for the page to say

    @property
    def will_overrun(self) -> bool:
        return self.budget_usd is not None and self.projected_total > self.budget_usd

    @property
    def projected_pct(self) -> Decimal | None:
        if not self.budget_usd:
            return None
        return (self.projected_total / self.budget_usd * 100).quantize(Decimal("0.1"))


# Pure functions: a series in, a forecast out.


def fit_line(points: Sequence[tuple[int, Decimal]]) -> tuple[Decimal, Decimal]:
    """(intercept, slope) of the least-squares line through (x, y) points."""
    if len(points) < 2:
        return (points[0][1] if points else ZERO), ZERO
    n = len(points)
    mean_x = Decimal(sum(x for x, _ in points)) / n
    mean_y = sum((y for _, y in points), ZERO) / n
    spread = sum(((x - mean_x) ** 2 for x, _ in points), ZERO)
    slope = sum(((x - mean_x) * (y - mean_y) for x, y in points), ZERO) / spread
    return mean_y - slope * mean_x, slope


def weekday_factors(days: Sequence[date], values: Sequence[Decimal]) -> dict[int, Decimal]:
    """Each weekday's spend relative to the trend, averaging 1 over the week."""
    intercept, slope = fit_line(list(enumerate(values)))
    ratios: dict[int, list[Decimal]] = {weekday: [] for weekday in range(7)}
    for i, (day, value) in enumerate(zip(days, values, strict=True)):
        trend = intercept + slope * i
        if trend > 0:
            ratios[day.weekday()].append(value / trend)
    means = {wd: sum(r, ZERO) / len(r) if r else ONE for wd, r in ratios.items()}
    scale = sum(means.values(), ZERO) / 7
    if not scale:
        return dict.fromkeys(range(7), ONE)
    return {weekday: mean / scale for weekday, mean in means.items()}


def expected_spend(
    history: Mapping[date, Decimal], today: date, ahead: Sequence[date], today_rate: Decimal
) -> tuple[dict[date, Decimal], bool, str]:
    """Expected spend of each day in ``ahead``, whether seasonality was used, and the method.

    ``history`` holds spend per UTC day; days without an entry spent nothing, from
    the first day with an entry on. Only complete days (before ``today``) count.
    """
    known = [day for day in history if day < today]
    if not known:
        return dict.fromkeys(ahead, today_rate), False, "today's rate"
    first = min(known)
    days = [first + timedelta(n) for n in range((today - first).days)]
    values = [history.get(day, ZERO) for day in days]
    if len(days) < SEASONALITY_MIN_DAYS:
        recent = values[-AVERAGE_DAYS:]
        mean = sum(recent, ZERO) / len(recent)
        return dict.fromkeys(ahead, mean), False, f"mean of the last {len(recent)} days"
    whole_weeks = min(len(days), SEASONALITY_MAX_DAYS) // 7 * 7
    factors = weekday_factors(days[-whole_weeks:], values[-whole_weeks:])
    # Fit the trend to deseasonalised days; a weekday that never spends says nothing about it.
    window = list(zip(days[-TREND_DAYS:], values[-TREND_DAYS:], strict=True))
    intercept, slope = fit_line(
        [
            (i, value / factors[day.weekday()])
            for i, (day, value) in enumerate(window)
            if factors[day.weekday()] > 0
        ]
    )
    expected: dict[date, Decimal] = {}
    for day in ahead:
        x = len(window) + (day - today).days  # today is the day after the window
        expected[day] = max(ZERO, intercept + slope * x) * factors[day.weekday()]
    return expected, True, f"{TREND_DAYS}-day trend times the weekday pattern"


def project_month(
    history: Mapping[date, Decimal],
    today: date,
    today_elapsed: Decimal,
    budget_usd: Decimal | None = None,
) -> Forecast:
    """The month of ``today`` projected to its last day.

    ``history`` may reach back before the month (trend and weekday pattern use
    it); only the month's days count towards the spend. ``today_elapsed`` is the
    fraction of today gone (0 at midnight UTC); today is expected to spend the
    rest of its expected day on top of what it has spent.
    """
    start = today.replace(day=1)
    last = today.replace(day=calendar.monthrange(today.year, today.month)[1])
    spent_today = history.get(today, ZERO)
    rate = spent_today / max(today_elapsed, MIN_ELAPSED)
    ahead = [today + timedelta(n) for n in range((last - today).days + 1)]
    expected, seasonal, method = expected_spend(history, today, ahead, rate)
    points: list[ForecastPoint] = []
    total = spent = ZERO
    for n in range((last - start).days + 1):
        day = start + timedelta(n)
        actual = history.get(day, ZERO) if day <= today else ZERO
        coming = expected.get(day, ZERO)
        if day == today:
            coming *= ONE - min(today_elapsed, ONE)
        spent += actual
        total += actual + coming
        points.append(ForecastPoint(day, quantize(actual), quantize(coming), quantize(total)))
    return Forecast(
        period="monthly",
        budget_usd=budget_usd,
        spent_to_date=quantize(spent),
        projected_total=quantize(total),
        points=tuple(points),
        uses_seasonality=seasonal,
        method=method,
    )


def project_day(
    spent_today: Decimal, today: date, today_elapsed: Decimal, budget_usd: Decimal | None = None
) -> Forecast:
    """Today projected to midnight UTC at today's rate so far."""
    projected = max(spent_today, spent_today / max(today_elapsed, MIN_ELAPSED))
    return Forecast(
        period="daily",
        budget_usd=budget_usd,
        spent_to_date=quantize(spent_today),
        projected_total=quantize(projected),
        points=(
            ForecastPoint(
                today, quantize(spent_today), quantize(projected - spent_today), quantize(projected)
            ),
        ),
        uses_seasonality=False,
        method="today's rate",
    )


# Reading the ledger.


def daily_spend(scope: str, scope_ref: str, start: datetime, end: datetime) -> dict[date, Decimal]:
    """Spend per UTC day in [start, end) of the records a budget of this scope counts."""
    records = UsageRecord.objects.filter(created__gte=start, created__lt=end)
    if scope in SCOPE_FIELDS:
        records = records.filter(**{SCOPE_FIELDS[scope]: scope_ref})
    per_day = (
        records.annotate(day=TruncDate("created", tzinfo=UTC))
        .values("day")
        .annotate(spent=Sum("cost_usd"))
        .order_by("day")
    )
    return {row["day"]: row["spent"] or ZERO for row in per_day}


def forecast_spend(
    scope: str,
    scope_ref: str = "",
    period: str = "monthly",
    budget_usd: Decimal | None = None,
    now: datetime | None = None,
) -> Forecast:
    """The forecast of the current period of a budget with this scope, from the ledger."""
    now = (now or timezone.now()).astimezone(UTC)
    today = now.date()
    midnight = datetime.combine(today, time.min, tzinfo=UTC)
    tomorrow = midnight + timedelta(1)  # all of today's records, however close to now
    elapsed = Decimal((now - midnight).seconds) / 86400
    if period == "daily":
        spent = daily_spend(scope, scope_ref, midnight, tomorrow).get(today, ZERO)
        return project_day(spent, today, elapsed, budget_usd)
    history = daily_spend(scope, scope_ref, midnight - timedelta(SEASONALITY_MAX_DAYS), tomorrow)
    return project_month(history, today, elapsed, budget_usd)


def forecast_budget(budget: BudgetInfo, now: datetime | None = None) -> Forecast:
    return forecast_spend(budget.scope, budget.scope_ref, budget.period, budget.amount_usd, now)
