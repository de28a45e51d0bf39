"""Significance tests: a real difference is found, an A/A comparison rarely is."""

from __future__ import annotations

import random
from decimal import Decimal

from routing.experiments.stats import (
    ArmStats,
    compare,
    format_p,
    mann_whitney_p,
    two_proportion_p,
    welch_p,
)


def arm(name: str, latencies: list[int], errors: int = 0, cost: str = "0.001") -> ArmStats:
    return ArmStats(
        name,
        requests=len(latencies) + errors,
        errors=errors,
        latencies=latencies,
        costs=[Decimal(cost)] * len(latencies),
    )


def lognormal(rng: random.Random, n: int, median_ms: float) -> list[int]:
    return [int(rng.lognormvariate(0, 0.5) * median_ms) for _ in range(n)]


def test_an_aa_comparison_rejects_about_alpha_of_the_time_over_400_runs() -> None:
    rng = random.Random(20261127)
    runs, alpha = 400, 0.05
    latency = errors = 0
    for _ in range(runs):
        a, b = lognormal(rng, 60, 300), lognormal(rng, 60, 300)
        latency += mann_whitney_p(a, b) < alpha
        ea, eb = (
            sum(rng.random() < 0.05 for _ in range(200)),
            sum(rng.random() < 0.05 for _ in range(200)),
        )
        errors += two_proportion_p(ea, 200, eb, 200) < alpha

    assert latency / runs <= 0.08
    assert errors / runs <= 0.08


def test_a_slower_arm_is_found_slower() -> None:
    rng = random.Random(7)
    control, slow = arm("a", lognormal(rng, 40, 300)), arm("b", lognormal(rng, 40, 600))

    latency = next(c for c in compare(control, slow) if c.metric == "latency")

    assert latency.significant
    assert latency.verdict.startswith("b is slower, p=")


def test_a_cheaper_arm_and_a_failing_arm_are_told_apart_by_their_tests() -> None:
    rng = random.Random(8)
    control = arm("a", lognormal(rng, 200, 300), errors=2, cost="0.0020")
    other = arm("b", lognormal(rng, 200, 300), errors=40, cost="0.0010")
    other.costs = [Decimal("0.0010") + Decimal(n % 3) / 10000 for n in range(len(other.costs))]

    verdicts = {c.metric: c for c in compare(control, other)}

    assert verdicts["cost"].significant and "b costs less" in verdicts["cost"].verdict
    assert verdicts["error_rate"].significant and "b fails more" in verdicts["error_rate"].verdict
    assert verdicts["latency"].verdict.startswith("no significant difference (p=")


def test_too_few_requests_say_not_enough_data() -> None:
    verdicts = {c.metric: c for c in compare(arm("a", [100, 120]), arm("b", [300]))}

    assert verdicts["latency"].p_value is None
    assert verdicts["latency"].verdict.startswith("not enough data")
    assert verdicts["satisfaction"].verdict.startswith("not enough data")


def test_the_tests_agree_with_known_values() -> None:
    # 10/100 against 20/100: z = 1.98, p = 0.048 (a textbook two-proportion z-test).
    assert abs(two_proportion_p(10, 100, 20, 100) - 0.0477) < 0.001
    assert welch_p([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]) == 1.0
    assert mann_whitney_p([5] * 10, [5] * 10) == 1.0
    assert format_p(0.0004) == "<0.001" and format_p(0.41) == "0.41"


def test_each_arms_satisfaction_comes_from_its_end_users_feedback(db: None) -> None:
    from billing.models import UsageRecord
    from routing.experiments.stats import arm_stats
    from routing.quality.models import Feedback

    for n in range(20):
        name = "a" if n % 2 else "b"
        UsageRecord.objects.create(
            request_id=f"r{n}", status="ok", experiment="tone", arm=name, latency_ms=100
        )
        # Arm a: 9 of 10 rated up; arm b: 4 of 10.
        up = (n % 2 and n != 1) or (not n % 2 and n < 8)
        Feedback.objects.create(
            request_id=f"r{n}", user=f"u{n}", kind="thumbs", rating=int(up), positive=up
        )

    arms = arm_stats(UsageRecord.objects.filter(experiment="tone"))

    assert arms["a"].satisfaction == (9, 10)
    assert arms["b"].satisfaction == (4, 10)
    assert arms["a"].satisfaction_pct == 90.0
