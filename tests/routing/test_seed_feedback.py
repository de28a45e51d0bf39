"""The demo's quality scores and ratings, on its usage history."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import UsageRecord
from routing.models import Feedback

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_usage_history", "--requests-per-day", "100", "--days", "7", stdout=out)
    call_command("seed_feedback", stdout=out)
    return out.getvalue()


def test_the_demo_history_gets_scores_and_ratings_near_the_target() -> None:
    output = seed()

    answered = UsageRecord.objects.filter(status="ok")
    assert answered.filter(quality_score__isnull=True).count() == 0
    assert 0.8 < answered.filter(quality_score=100).count() / answered.count() < 0.92
    ratings = Feedback.objects.count()
    assert 0.02 * answered.count() < ratings < 0.06 * answered.count()
    share = Feedback.objects.filter(positive=True).count() / ratings
    assert 0.8 < share < 0.97
    assert "rated (" in output
    record = UsageRecord.objects.get(request_id=Feedback.objects.first().request_id)
    assert Feedback.objects.first().provider == record.provider


def test_a_rerun_replaces_the_demo_ratings_and_keeps_real_ones() -> None:
    Feedback.objects.create(request_id="real-1", kind="stars", rating=5, positive=True)
    seed()
    first = Feedback.objects.count()

    call_command("seed_feedback", stdout=StringIO())

    assert Feedback.objects.count() == first
    assert Feedback.objects.filter(request_id="real-1").exists()
