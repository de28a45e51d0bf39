"""Each deployment's rolling quality, published for quality-based routing.

Every minute (`jobs.publish_deployment_quality`, project/cron.py) one job
reads the database and rewrites the Redis hash `sb:quality:deployments`
(field: deployment id, value: 0-100 as a decimal string), which
`routing.selection` reads to demote a deployment under its route's quality floor.

The blend, per deployment:

    quality = 0.7 * automated + 0.3 * 100 * feedback share

- automated: the mean `quality_score` of its answers in the last
  SWITCHBOARD_QUALITY_WINDOW_MINUTES (60) — a rolling window rather than an EWMA
  kept on the hot path: it needs no extra work per request, one process writes
  it, and it survives restarts; the cost is up to a minute's lag (plus the
  ledger's 2 s drain) before a deployment that turns bad is demoted.
- feedback share: positive / all ratings of its answers over
  SWITCHBOARD_QUALITY_FEEDBACK_DAYS (7); ratings are rarer, so the window is longer.

A part with fewer than SWITCHBOARD_QUALITY_MIN_SAMPLES (5) answers or ratings
is left out and the other counts alone; a deployment with neither has no field
(no information: neutral, never demoted on a guess).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Avg, Count, Q
from django.utils import timezone
from redis import Redis

from billing.models import UsageRecord
from routing.quality.models import Feedback

QUALITY_KEY = "sb:quality:deployments"
AUTOMATED_WEIGHT = Decimal("0.7")
FEEDBACK_WEIGHT = Decimal("0.3")
PLACES = Decimal("0.1")


@dataclass(frozen=True)
class Rolling:
    deployment_id: int
    automated: Decimal | None  # mean score 0-100, None below the minimum sample
    answers: int
    feedback_share: Decimal | None  # 0-1, None below the minimum sample
    ratings: int

    @property
    def blended(self) -> Decimal | None:
        parts: list[tuple[Decimal, Decimal]] = []
        if self.automated is not None:
            parts.append((AUTOMATED_WEIGHT, self.automated))
        if self.feedback_share is not None:
            parts.append((FEEDBACK_WEIGHT, self.feedback_share * 100))
        if not parts:
            return None
        total_weight = sum((weight for weight, _ in parts), Decimal(0))
        value = sum((weight * part for weight, part in parts), Decimal(0)) / total_weight
        return value.quantize(PLACES, rounding=ROUND_HALF_UP)


def rolling_quality(now: datetime | None = None) -> dict[int, Rolling]:
    """Every deployment with answers or ratings in its windows (two grouped queries)."""
    now = now or timezone.now()
    minimum = settings.SWITCHBOARD_QUALITY_MIN_SAMPLES
    answers: dict[int, tuple[float | None, int]] = {}
    for row in (
        UsageRecord.objects.filter(
            created__gte=now - timedelta(minutes=settings.SWITCHBOARD_QUALITY_WINDOW_MINUTES),
            created__lte=now,
            quality_score__isnull=False,
            deployment_id__isnull=False,
        )
        .values("deployment_id")
        .annotate(mean=Avg("quality_score"), n=Count("id"))
        .order_by()
    ):
        if row["deployment_id"] is not None:
            answers[row["deployment_id"]] = (row["mean"], row["n"])
    ratings: dict[int, tuple[int, int]] = {}
    for rated in (
        Feedback.objects.filter(
            updated__gte=now - timedelta(days=settings.SWITCHBOARD_QUALITY_FEEDBACK_DAYS),
            updated__lte=now,
            deployment_id__isnull=False,
        )
        .values("deployment_id")
        .annotate(positive=Count("id", filter=Q(positive=True)), n=Count("id"))
        .order_by()
    ):
        if rated["deployment_id"] is not None:
            ratings[rated["deployment_id"]] = (rated["positive"], rated["n"])
    found: dict[int, Rolling] = {}
    for deployment_id in answers.keys() | ratings.keys():
        mean, n_answers = answers.get(deployment_id, (None, 0))
        positive, n_ratings = ratings.get(deployment_id, (0, 0))
        found[deployment_id] = Rolling(
            deployment_id,
            Decimal(str(mean)) if mean is not None and n_answers >= minimum else None,
            n_answers,
            Decimal(positive) / n_ratings if n_ratings >= minimum else None,
            n_ratings,
        )
    return found


def publish(redis: Redis, now: datetime | None = None) -> dict[int, Decimal]:
    """Rewrite the hash in one transaction: readers see the old scores or the new, whole."""
    scores = {
        deployment_id: blended
        for deployment_id, rolling in rolling_quality(now).items()
        if (blended := rolling.blended) is not None
    }
    pipe = redis.pipeline(transaction=True)
    pipe.delete(QUALITY_KEY)
    if scores:
        pipe.hset(QUALITY_KEY, mapping={str(k): f"{v:f}" for k, v in scores.items()})
    pipe.execute()
    return scores
