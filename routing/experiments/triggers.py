"""Rollback triggers: is the new path healthy over a window? Also the gates of a phase.

Four checks over the new arm's usage records in the window (each skipped, not
failed, when it has too little data: under the rollout's ``min_requests``):

- availability: the share of the new arm's requests that the new path's own
  deployments answered (those not on the legacy path). A request the new path
  lost to a fallback onto a legacy deployment counts against it: with AIMLAPI
  failing, the new path is not serving, even when OpenAI saves the request.
  Triggers under ``min_availability_pct`` (99).
- latency: the new arm's p50 against the baseline (the legacy path's p50 before
  the rollout started; without one, the legacy arm's p50 in the same window).
  Triggers over ``max_latency_factor`` (2x).
- spend pace: the new arm's spend rate in the window, scaled up to all of the
  route's traffic (÷ the rollout's share), over a whole budget period, as a
  percentage of the budget (the route's monthly budget, or the global one).
  Triggers over ``max_spend_pct`` (150%): at that pace the route alone would spend
  one and a half budgets. Skipped without a budget.
- quality: the mean quality score of the new arm's answers that have one.
  Triggers under ``min_quality`` (80). Skipped with no scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from billing.budgets import BudgetInfo
from billing.models import Budget, UsageRecord
from routing.experiments.stats import ArmStats, arm_stats, counted, percentile

BASELINE_HOURS = 24


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not enough data to judge
    value: str
    threshold: str
    text: str


@dataclass
class Evaluation:
    start: datetime
    end: datetime
    arms: dict[str, ArmStats]
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def arm(self, name: str) -> ArmStats:
        return self.arms.get(name) or ArmStats(name)

    def summary(self) -> str:
        return "; ".join(c.text for c in self.failed) or "every check passed"


def arm_records(rollout: Any, start: datetime, end: datetime) -> Any:
    return UsageRecord.objects.filter(
        route=rollout.route.name,
        rollout_arm__in=["legacy", "new"],
        created__gte=start,
        created__lte=end,
    )


def evaluate(rollout: Any, start: datetime, end: datetime | None = None) -> Evaluation:
    """The four checks of the rollout's new arm over [start, end]."""
    end = end or timezone.now()
    legacy_ids = set(rollout.deployment_ids(rollout.legacy_labels()))
    own = set(rollout.deployment_ids(rollout.new_labels())) - legacy_ids
    arms = arm_stats(arm_records(rollout, start, end), "rollout_arm", own, with_satisfaction=False)
    evaluation = Evaluation(start, end, arms)
    new, legacy = evaluation.arm("new"), evaluation.arm("legacy")
    enough = new.requests >= rollout.min_requests
    evaluation.checks = [
        _availability(rollout, new, enough, bool(own)),
        _latency(rollout, new, legacy, enough),
        _spend(rollout, new, start, end, enough),
        _quality(rollout, new),
    ]
    return evaluation


def _short(n: int, needed: int) -> str:
    return f"{n} requests of the {needed} needed"


def _availability(rollout: Any, new: ArmStats, enough: bool, has_own: bool) -> Check:
    threshold = f"{rollout.min_availability_pct.normalize():f}%"
    if not enough:
        return Check(
            "availability", None, "-", threshold, _short(new.requests, rollout.min_requests)
        )
    value = (new.own_availability_pct if has_own else new.availability_pct) or 0.0
    ok = Decimal(str(value)) >= rollout.min_availability_pct
    text = f"availability {value:.1f}% (under {threshold})" if not ok else f"{value:.1f}%"
    return Check("availability", ok, f"{value:.1f}%", threshold, text)


def _latency(rollout: Any, new: ArmStats, legacy: ArmStats, enough: bool) -> Check:
    baseline = rollout.baseline_p50_ms
    source = "baseline"
    if baseline is None:
        baseline, source = legacy.latency_p50, "legacy arm"
    factor = rollout.max_latency_factor
    threshold = f"{factor.normalize():f}x {source}"
    p50 = new.latency_p50
    if not enough or p50 is None or not baseline:
        why = "no baseline" if not baseline else _short(new.requests, rollout.min_requests)
        return Check("latency", None, "-", threshold, why)
    limit = Decimal(str(baseline)) * factor
    ok = Decimal(str(p50)) <= limit
    value = f"p50 {p50:.0f} ms vs {baseline:.0f} ms"
    text = f"latency {value} (over {threshold})" if not ok else value
    return Check("latency", ok, value, threshold, text)


def budget_for(route: str) -> BudgetInfo | None:
    """The route's monthly budget, or the global monthly one."""
    budgets = {
        (b.scope, b.scope_ref): b for b in Budget.objects.filter(period=Budget.Period.MONTHLY)
    }
    found = budgets.get(("route", route)) or budgets.get(("global", ""))
    return found.info() if found is not None else None


def _spend(rollout: Any, new: ArmStats, start: datetime, end: datetime, enough: bool) -> Check:
    threshold = f"{rollout.max_spend_pct.normalize():f}% of budget pace"
    budget = budget_for(rollout.route.name)
    seconds = Decimal(str(max((end - start).total_seconds(), 1.0)))
    share = Decimal(rollout.percent or 100) / 100
    if budget is None or not budget.amount_usd or not enough:
        why = "no monthly budget" if budget is None else _short(new.requests, rollout.min_requests)
        return Check("spend", None, "-", threshold, why)
    period = Decimal(str((budget.period_end(end) - budget.period_start(end)).total_seconds()))
    pace = new.total_cost / seconds / share * period
    pct = (pace / budget.amount_usd * 100).quantize(Decimal("0.1"))
    ok = pct <= rollout.max_spend_pct
    value = f"{pct}% (${pace.quantize(Decimal('0.01'))} a {budget.period[:-2]})"
    text = f"spend pace {value}, over {threshold} ({budget.label})" if not ok else value
    return Check("spend", ok, value, threshold, text)


def _quality(rollout: Any, new: ArmStats) -> Check:
    threshold = f"{rollout.min_quality.normalize():f}"
    mean = new.quality_mean
    if mean is None or len(new.qualities) < rollout.min_requests:
        return Check(
            "quality", None, "-", threshold, _short(len(new.qualities), rollout.min_requests)
        )
    ok = Decimal(str(mean)) >= rollout.min_quality
    text = f"quality {mean:.1f} (under {threshold})" if not ok else f"{mean:.1f}"
    return Check("quality", ok, f"{mean:.1f}", threshold, text)


def measure_baseline(rollout: Any, before: datetime | None = None) -> int | None:
    """The legacy path's p50 latency over the day before ``before`` (answered requests)."""
    before = before or timezone.now()
    legacy_ids = rollout.deployment_ids(rollout.legacy_labels())
    records = counted(
        UsageRecord.objects.filter(
            route=rollout.route.name,
            status=UsageRecord.Status.OK,
            created__gte=before - timedelta(hours=BASELINE_HOURS),
            created__lt=before,
        )
    )
    # The legacy arm's answers, and before any rollout the route's answers by legacy deployments.
    records = records.filter(
        Q(rollout_arm="legacy") | Q(rollout_arm="", deployment_id__in=legacy_ids)
    )
    latencies = list(records.values_list("latency_ms", flat=True))
    p50 = percentile(latencies, 50)
    return int(p50) if p50 is not None else None
