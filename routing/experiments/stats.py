"""Per-arm numbers from the ledger, and a significance test per metric.

Rows counted: those of the arm that reached a provider path, i.e. not refused
before any provider (``rejected``: a rate limit or budget, not the arm's doing)
and not answered from the cache or by an identical request in flight (no call,
cost 0). Failures are ``error`` and ``partial`` rows.

Tests, each arm against the first (the control), two-sided:

| metric | test |
|---|---|
| error rate | two-proportion z-test (pooled), with `scipy.stats.norm` |
| latency | Mann-Whitney U on answered requests' latency (latency is skewed: ranks, not means) |
| cost per request | Welch's t on answered requests' cost |
| quality | Welch's t on quality scores (rows that have one) |
| satisfaction | two-proportion z-test on positive feedback |

A test needs ``MIN_SAMPLE`` values in each arm; below that its verdict is "not
enough data". Several arms are each compared with the control at the same alpha,
with no correction for multiple comparisons: with more than two arms, read a lone
p just under alpha with care.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from statistics import fmean, median
from typing import Any

from django.db.models import QuerySet

from billing.models import UsageRecord
from billing.money import quantize

MIN_SAMPLE = 5
DEFAULT_ALPHA = 0.05
FAILED = ("error", "partial")


@dataclass
class ArmStats:
    name: str
    requests: int = 0
    errors: int = 0
    latencies: list[int] = field(default_factory=list)  # answered requests only
    costs: list[Decimal] = field(default_factory=list)  # answered requests only
    qualities: list[int] = field(default_factory=list)
    satisfaction: tuple[int, int] | None = None  # (positive, total); None: no feedback data
    own_answers: int = 0  # answered by a deployment of ``own`` (availability of a new path)

    @property
    def answered(self) -> int:
        return self.requests - self.errors

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def availability_pct(self) -> float | None:
        return 100 * self.answered / self.requests if self.requests else None

    @property
    def own_availability_pct(self) -> float | None:
        return 100 * self.own_answers / self.requests if self.requests else None

    @property
    def latency_p50(self) -> float | None:
        return percentile(self.latencies, 50)

    @property
    def latency_p95(self) -> float | None:
        return percentile(self.latencies, 95)

    @property
    def cost_per_request(self) -> Decimal | None:
        if not self.costs:
            return None
        return quantize(sum(self.costs, Decimal(0)) / len(self.costs))

    @property
    def total_cost(self) -> Decimal:
        return sum(self.costs, Decimal(0))

    @property
    def quality_mean(self) -> float | None:
        return fmean(self.qualities) if self.qualities else None

    @property
    def satisfaction_pct(self) -> float | None:
        if self.satisfaction is None or not self.satisfaction[1]:
            return None
        positive, total = self.satisfaction
        return 100 * positive / total


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile (p50 of [1, 2, 3, 4] is 2); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def counted(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
    """The rows that say something about an arm (see the module's docstring)."""
    return records.exclude(status=UsageRecord.Status.REJECTED).filter(
        cache_hit=False, deduplicated=False
    )


def arm_stats(
    records: QuerySet[UsageRecord],
    group_by: str = "arm",
    own: Iterable[int] = (),
    with_satisfaction: bool = True,
) -> dict[str, ArmStats]:
    """Per value of ``group_by`` ("arm" or "rollout_arm"), the arm's numbers."""
    own_ids = set(own)
    arms: dict[str, ArmStats] = {}
    rows = counted(records).values_list(
        group_by, "status", "latency_ms", "cost_usd", "quality_score", "deployment_id"
    )
    for name, status, latency, cost, quality, deployment_id in rows.iterator():
        stats = arms.get(name)
        if stats is None:
            stats = arms[name] = ArmStats(name)
        stats.requests += 1
        if status in FAILED:
            stats.errors += 1
            continue
        stats.latencies.append(latency)
        stats.costs.append(cost)
        if quality is not None:
            stats.qualities.append(quality)
        if deployment_id in own_ids:
            stats.own_answers += 1
    if with_satisfaction:
        for name, stats in arms.items():
            stats.satisfaction = satisfaction(counted(records).filter(**{group_by: name}))
    return arms


def satisfaction(records: QuerySet[UsageRecord]) -> tuple[int, int]:
    """(positive, total) end-user feedback (POST /api/v1/feedback) on these records' requests."""
    from routing.quality.models import Feedback

    rows = Feedback.objects.filter(request_id__in=records.values("request_id"))
    return rows.filter(positive=True).count(), rows.count()


# -- significance -------------------------------------------------------------------------


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p of a pooled two-proportion z-test (1.0 when the pooled rate is 0 or 1)."""
    from scipy.stats import norm

    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    z = (x2 / n2 - x1 / n1) / spread
    return float(2 * norm.sf(abs(z)))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test (unequal variances); 1.0 when both are constant."""
    from scipy.stats import ttest_ind

    if len(set(a)) <= 1 and len(set(b)) <= 1:
        return 1.0 if fmean(a) == fmean(b) else 0.0
    with warnings.catch_warnings():
        # Costs of one arm are often all alike (the same tokens, the same price): SciPy
        # warns of precision loss for such samples, and the test is still right.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of the Mann-Whitney U test."""
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) <= 1:
        return 1.0
    return float(mannwhitneyu(list(a), list(b), alternative="two-sided").pvalue)


@dataclass(frozen=True)
class Comparison:
    metric: str
    test: str
    control: str
    arm: str
    p_value: float | None  # None: not enough data
    significant: bool
    verdict: str


# metric -> (label, test name, higher is better, wording when the arm is higher / lower)
METRICS: dict[str, tuple[str, str, str, str]] = {
    "error_rate": ("error rate", "two-proportion z-test", "fails more", "fails less"),
    "latency": ("latency", "Mann-Whitney U", "is slower", "is faster"),
    "cost": ("cost per request", "Welch's t-test", "costs more", "costs less"),
    "quality": ("quality", "Welch's t-test", "scores higher", "scores lower"),
    "satisfaction": (
        "satisfaction",
        "two-proportion z-test",
        "satisfies more",
        "satisfies less",
    ),
}


def compare(control: ArmStats, arm: ArmStats, alpha: float = DEFAULT_ALPHA) -> list[Comparison]:
    """Each metric of ``arm`` against ``control``: p-value and a verdict in words."""
    results = []
    samples: dict[str, tuple[Any, Any, Callable[..., float]]] = {
        "latency": (control.latencies, arm.latencies, mann_whitney_p),
        "cost": ([float(c) for c in control.costs], [float(c) for c in arm.costs], welch_p),
        "quality": (control.qualities, arm.qualities, welch_p),
    }
    for metric in METRICS:
        _, test, higher, lower = METRICS[metric]
        if metric == "error_rate":
            sizes = (control.requests, arm.requests)
            counts = (control.errors, arm.errors)
        elif metric == "satisfaction":
            a, b = control.satisfaction or (0, 0), arm.satisfaction or (0, 0)
            sizes, counts = (a[1], b[1]), (a[0], b[0])
        else:
            first, second, _ = samples[metric]
            sizes = (len(first), len(second))
        if min(sizes) < MIN_SAMPLE:
            results.append(
                Comparison(
                    metric,
                    test,
                    control.name,
                    arm.name,
                    None,
                    False,
                    f"not enough data (n={sizes[0]} and {sizes[1]}; "
                    f"a test needs {MIN_SAMPLE} each)",
                )
            )
            continue
        if metric in ("error_rate", "satisfaction"):
            p = two_proportion_p(counts[0], sizes[0], counts[1], sizes[1])
            arm_higher = counts[1] / sizes[1] > counts[0] / sizes[0]
        else:
            first, second, test_fn = samples[metric]
            p = test_fn(first, second)
            centre = median if metric == "latency" else fmean
            arm_higher = centre(second) > centre(first)
        significant = p < alpha
        if significant:
            verdict = f"{arm.name} {higher if arm_higher else lower}, p={format_p(p)}"
        else:
            verdict = f"no significant difference (p={format_p(p)})"
        results.append(Comparison(metric, test, control.name, arm.name, p, significant, verdict))
    return results


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}".rstrip("0").rstrip(".") if p < 1 else "1"


@dataclass
class ExperimentResults:
    arms: list[ArmStats]
    comparisons: list[Comparison]
    alpha: float
    start: datetime | None
    end: datetime | None


def experiment_results(experiment: Any, alpha: float | None = None) -> ExperimentResults:
    """Per arm numbers over the experiment's window, and each arm against the control."""
    from django.conf import settings
    from django.utils import timezone

    if alpha is None:
        alpha = float(settings.SWITCHBOARD.get("EXPERIMENT_ALPHA", DEFAULT_ALPHA))
    records = UsageRecord.objects.filter(experiment=experiment.name)
    start, end = experiment.started_at, experiment.stopped_at
    if start is not None:
        records = records.filter(created__gte=start)
    if end is not None:
        records = records.filter(created__lte=end)
    found = arm_stats(records)
    names = [v.name for v in experiment.variants.all()]
    arms = [found.get(name) or ArmStats(name) for name in names]
    comparisons = [c for arm in arms[1:] for c in compare(arms[0], arm, alpha)] if arms else []
    return ExperimentResults(arms, comparisons, alpha, start, end or timezone.now())
