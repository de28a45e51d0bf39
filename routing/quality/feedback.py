"""Feedback on answers, and satisfaction (the share of positive ratings) by group.

A rating is a thumbs up/down or 1-5 stars; 4 and 5 stars count as positive. One
rating per (request, user), which the user may change: giving it again updates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from redis.exceptions import LockError

from billing.ledger import LEDGER
from billing.models import UsageRecord
from project.errors import ApiError
from project.redis import sync_client
from routing.models import ClientKey
from routing.quality.models import Feedback

THUMBS = {"up": 1, "down": 0}
POSITIVE_STARS = 4
# How long a rating waits for a running ledger drain to finish before it gives up.
DRAIN_WAIT_SECONDS = 10

# Satisfaction groupings: the columns each one groups feedback by.
GROUPINGS: dict[str, tuple[str, ...]] = {
    "model": ("provider", "model"),
    "route": ("route",),
    "provider": ("provider",),
    "deployment": ("deployment_id",),
    "experiment_arm": ("experiment", "arm"),
    "rollout_arm": ("rollout_arm",),
}
# Copied from the rated usage record onto the feedback.
COPIED = ("route", "provider", "model", "deployment_id", "experiment", "arm", "rollout_arm")


def normalise(rating: Any) -> tuple[str, int, bool]:
    """(kind, stored rating, positive) of "up"/"down" or 1-5; ValueError otherwise."""
    if isinstance(rating, str) and rating.lower() in THUMBS:
        value = THUMBS[rating.lower()]
        return Feedback.Kind.THUMBS, value, bool(value)
    if isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5:
        return Feedback.Kind.STARS, rating, rating >= POSITIVE_STARS
    raise ValueError('a rating is "up", "down" or a whole number of stars from 1 to 5')


def key_lineage(key: ClientKey) -> set[int]:
    """The key and the keys it was rotated from or into: one client's requests."""
    ids = {key.pk}
    earlier: int | None = key.rotated_from_id
    while earlier is not None and earlier not in ids:
        ids.add(earlier)
        earlier = (
            ClientKey.objects.filter(pk=earlier).values_list("rotated_from_id", flat=True).first()
        )
    later = ClientKey.objects.filter(rotated_from_id=key.pk).values_list("pk", flat=True).first()
    while later is not None and later not in ids:
        ids.add(later)
        later = ClientKey.objects.filter(rotated_from_id=later).values_list("pk", flat=True).first()
    return ids


def rated_record(key: ClientKey, request_id: str) -> UsageRecord:
    """The usage record a key may rate, or 404.

    A record still in the ledger's Redis list (the drain runs every 2 s) is
    drained first, once. Another key's request is as unknown as one that never was.
    """
    record = UsageRecord.objects.filter(request_id=request_id).first()
    if record is None:
        redis = sync_client()
        if LEDGER.pending(redis):
            try:
                with LEDGER.held(redis, wait_seconds=DRAIN_WAIT_SECONDS) as lock:
                    LEDGER.drain_held(redis, lock)
            except LockError:
                raise ApiError(
                    503,
                    "The usage ledger is busy; rate this request again shortly.",
                    "ledger_busy",
                    retry_after=2,
                ) from None
            record = UsageRecord.objects.filter(request_id=request_id).first()
    if record is None or record.client_key_id not in key_lineage(key):
        raise ApiError(
            404,
            f"No request of this key has the id '{request_id}' (x-switchboard-request-id).",
            "request_not_found",
            param="request_id",
        )
    return record


def give_feedback(
    key: ClientKey, request_id: str, rating: Any, user: str = "", comment: str = ""
) -> tuple[Feedback, bool]:
    """Record or change one user's rating of one request; (feedback, created)."""
    kind, value, positive = normalise(rating)
    record = rated_record(key, request_id)
    now = timezone.now()
    fields = {
        "kind": kind,
        "rating": value,
        "positive": positive,
        "comment": comment,
        "client_key_id": key.pk,
        "updated": now,
        **{name: getattr(record, name) for name in COPIED},
    }
    for attempt in range(2):
        try:
            with transaction.atomic():
                return Feedback.objects.update_or_create(
                    request_id=request_id,
                    user=user,
                    defaults=fields,
                    create_defaults={**fields, "created": now},
                )
        except IntegrityError:  # the same user's first rating, twice at once: update it
            if attempt:
                raise
    raise AssertionError("unreachable")


def forget_end_user(sender: object, user_id: str, alias: str, **kwargs: Any) -> int:
    """billing.forget_user's signal: the user's ratings stay, under the pseudonym, without
    their comments (the user's own words); satisfaction still counts them."""
    return Feedback.objects.filter(user=user_id).update(user=alias, comment="")


@dataclass(frozen=True)
class Satisfaction:
    group: str
    total: int
    positive: int

    @property
    def share(self) -> Decimal | None:
        if not self.total:
            return None
        return (Decimal(self.positive) / self.total).quantize(
            Decimal("0.0001"), rounding=ROUND_HALF_UP
        )

    def meets(self, target: Decimal) -> bool | None:
        share = self.share
        return None if share is None else share >= target

    def as_dict(self, target: Decimal) -> dict[str, Any]:
        share = self.share
        return {
            "group": self.group,
            "ratings": self.total,
            "positive": self.positive,
            "satisfaction": None if share is None else f"{share:f}",
            "meets_target": self.meets(target),
        }


def target() -> Decimal:
    return Decimal(str(settings.SWITCHBOARD_SATISFACTION_TARGET))


def window(
    since: datetime | None = None, until: datetime | None = None, **filters: Any
) -> QuerySet[Feedback]:
    rows = Feedback.objects.filter(**filters)
    if since is not None:
        rows = rows.filter(updated__gte=since)
    if until is not None:
        rows = rows.filter(updated__lt=until)
    return rows


def satisfaction(rows: QuerySet[Feedback], by: str) -> tuple[list[Satisfaction], Satisfaction]:
    """Per group (largest first) and overall."""
    fields = GROUPINGS[by]
    counted = (
        rows.values(*fields)
        .annotate(total=Count("id"), positive=Count("id", filter=Q(positive=True)))
        .order_by("-total", *fields)
    )
    groups = [
        Satisfaction(
            "/".join(str(row[f]) if row[f] not in (None, "") else "(none)" for f in fields),
            row["total"],
            row["positive"],
        )
        for row in counted
    ]
    overall = Satisfaction("all", sum(g.total for g in groups), sum(g.positive for g in groups))
    return groups, overall
