"""`seed_feedback`: quality scores and end-user ratings on the demo's usage history.

Deterministic (a fixed random seed). The demo history's answered rows (request ids
starting "demo-", from `seed_usage_history`) get an automated quality score, most
of them 100 and a few with a rule fired, and about one in 25 gets a rating from a
demo user: mostly positive on AIMLAPI, a little less elsewhere, so the Quality page
and the checklist's satisfaction evidence have something true-to-life to show. A
rerun replaces the demo ratings.
"""

from __future__ import annotations

import random
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing.models import UsageRecord
from routing.quality.feedback import COPIED
from routing.quality.models import Feedback

PREFIX = "demo-"
SEED = 7
RATED_SHARE = 0.04
# (score, rules fired, share): what the automated checks found on the demo's answers.
SCORES: tuple[tuple[int, tuple[str, ...], float], ...] = (
    (100, (), 0.86),
    (80, ("slow",), 0.06),
    (60, ("truncated",), 0.05),
    (40, ("refusal",), 0.03),
)
POSITIVE = {"aimlapi": 0.94}  # the share of positive ratings; other providers: DEFAULT
DEFAULT_POSITIVE = 0.88
CHUNK = 900  # ids an UPDATE names at once (under SQLite's variable limit)


class Command(BaseCommand):
    help = "Give the demo's usage history quality scores and end-user ratings (development only)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("Demo feedback is for development machines.")
        draw = random.Random(SEED)
        Feedback.objects.filter(request_id__startswith=PREFIX).delete()
        rows = list(
            UsageRecord.objects.filter(request_id__startswith=PREFIX, status="ok")
            .only("request_id", "client_key_id", "created", *COPIED)
            .order_by("request_id")
        )
        ratings = []
        scored: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for record in rows:
            score, fired = pick(draw)
            scored.setdefault((score, fired), []).append(record.pk)
            if draw.random() < RATED_SHARE:
                chance = POSITIVE.get(record.provider, DEFAULT_POSITIVE) - (100 - score) / 200
                positive = draw.random() < chance
                ratings.append(
                    Feedback(
                        request_id=record.request_id,
                        user=f"demo-user-{draw.randrange(200)}",
                        kind=Feedback.Kind.THUMBS,
                        rating=int(positive),
                        positive=positive,
                        client_key_id=record.client_key_id,
                        created=record.created,
                        updated=record.created,
                        **{name: getattr(record, name) for name in COPIED},
                    )
                )
        # One UPDATE per score and chunk: bulk_update's CASE per row is slow on SQLite.
        # The demo history's rows carry no other decision to keep.
        for (score, fired), pks in scored.items():
            for start in range(0, len(pks), CHUNK):
                UsageRecord.objects.filter(pk__in=pks[start : start + CHUNK]).update(
                    quality_score=score, decision={"quality": {"score": score, "fired": fired}}
                )
        Feedback.objects.bulk_create(ratings, batch_size=1000)
        liked = sum(f.positive for f in ratings)
        share = f"{100 * liked / len(ratings):.1f}%" if ratings else "none"
        self.stdout.write(
            f"Demo quality: {len(rows)} answers scored, {len(ratings)} rated ({share} positive)"
        )


def pick(draw: random.Random) -> tuple[int, tuple[str, ...]]:
    roll = draw.random()
    for score, fired, share in SCORES:
        if roll < share:
            return score, fired
        roll -= share
    return 100, ()
