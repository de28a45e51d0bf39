"""Evidence history: the last month whole, a daily trend before it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from checklist.jobs import thin_evidence_history
from checklist.models import EvidenceResult

pytestmark = pytest.mark.django_db


def measure(key: str, days_ago: float, status: str = "pass") -> EvidenceResult:
    return EvidenceResult.objects.create(
        key=key, status=status, measured_at=timezone.now() - timedelta(days=days_ago)
    )


def test_old_results_thin_to_the_last_of_each_check_per_day_and_recent_ones_stay() -> None:
    old_day = timezone.now().replace(hour=12, minute=0) - timedelta(days=40)
    morning = EvidenceResult.objects.create(
        key="uptime", status="fail", measured_at=old_day - timedelta(hours=3)
    )
    evening = EvidenceResult.objects.create(
        key="uptime", status="pass", measured_at=old_day + timedelta(hours=3)
    )
    other_check = EvidenceResult.objects.create(
        key="p95_latency", status="pass", measured_at=old_day
    )
    recent = [measure("uptime", 1), measure("uptime", 1.01), measure("uptime", 29)]

    assert thin_evidence_history() == 1

    kept = set(EvidenceResult.objects.values_list("id", flat=True))
    assert morning.id not in kept
    assert {evening.id, other_check.id, *(r.id for r in recent)} == kept


def test_thinning_twice_deletes_nothing_more() -> None:
    for hours in range(0, 48, 6):
        measure("uptime", 35 + hours / 24)
    first = thin_evidence_history()
    assert first > 0
    assert thin_evidence_history() == 0
