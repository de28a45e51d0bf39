"""What the admin's Quality page shows: satisfaction and the automated score, per model,
route, provider and arm, over a window, against the satisfaction target."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Avg, Count
from django.utils import timezone

from billing.models import UsageRecord
from routing.quality.feedback import GROUPINGS, satisfaction, target, window

SHOWN = ("model", "route", "provider", "experiment_arm", "rollout_arm")
TITLES = {
    "model": "By model",
    "route": "By route",
    "provider": "By provider",
    "experiment_arm": "By experiment arm",
    "rollout_arm": "By rollout arm",
}
ONE_PLACE = Decimal("0.1")


@dataclass(frozen=True)
class Row:
    group: str
    ratings: int
    satisfaction_pct: Decimal | None
    meets: bool | None
    answers: int
    mean_score: Decimal | None


def label(row: dict[str, Any], fields: tuple[str, ...]) -> str:
    return "/".join(str(row[f]) if row[f] not in (None, "") else "(none)" for f in fields)


def rows_by(by: str, since: datetime, goal: Decimal) -> list[Row]:
    fields = GROUPINGS[by]
    groups, _ = satisfaction(window(since), by)
    rated = {g.group: g for g in groups}
    scored = {
        label(row, fields): (row["n"], row["mean"])
        for row in UsageRecord.objects.filter(created__gte=since, quality_score__isnull=False)
        .values(*fields)
        .annotate(n=Count("id"), mean=Avg("quality_score"))
        .order_by()
    }
    if by in ("experiment_arm", "rollout_arm"):  # requests outside any arm are not an arm
        rated.pop("(none)/(none)" if by == "experiment_arm" else "(none)", None)
        scored.pop("(none)/(none)" if by == "experiment_arm" else "(none)", None)
    rows = []
    for group in sorted(rated.keys() | scored.keys()):
        feedback = rated.get(group)
        answers, mean = scored.get(group, (0, None))
        share = feedback.share if feedback else None
        rows.append(
            Row(
                group,
                feedback.total if feedback else 0,
                None if share is None else (share * 100).quantize(ONE_PLACE),
                feedback.meets(goal) if feedback else None,
                answers,
                None
                if mean is None
                else Decimal(str(mean)).quantize(ONE_PLACE, rounding=ROUND_HALF_UP),
            )
        )
    return rows


def quality_page(days: int = 7, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    since = now - timedelta(days=days)
    goal = target()
    _, overall = satisfaction(window(since), "route")
    sections: list[dict[str, Any]] = []
    charts: list[dict[str, Any]] = []
    for by in SHOWN:
        rows = rows_by(by, since, goal)
        sections.append({"by": by, "title": TITLES[by], "rows": rows})
        charts.append(
            {
                "by": by,
                "labels": [r.group for r in rows],
                "satisfaction": [r.satisfaction_pct for r in rows],
                "score": [r.mean_score for r in rows],
            }
        )
    share = overall.share
    return {
        "days": days,
        "target_pct": (goal * 100).quantize(ONE_PLACE),
        "overall_ratings": overall.total,
        "overall_pct": None if share is None else (share * 100).quantize(ONE_PLACE),
        "overall_meets": overall.meets(goal),
        "sections": sections,
        "data": {
            "target_pct": (goal * 100).quantize(ONE_PLACE),
            "sections": charts,
        },
    }
