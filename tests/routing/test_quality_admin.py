"""The admin's quality pages: the Quality page against the target, and rule weights."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from billing.models import UsageRecord
from routing.models import Feedback, QualityRule
from routing.table import build_table

pytestmark = pytest.mark.django_db


def member_of(role: str) -> Client:
    user = User.objects.create_user(role.lower(), password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def rated(model: str, positive: int, negative: int) -> None:
    start = Feedback.objects.count()
    Feedback.objects.bulk_create(
        Feedback(request_id=f"req-{start + i}", kind="thumbs", rating=int(i < positive),
                 positive=i < positive, provider="aimlapi", model=model, route="summary")
        for i in range(positive + negative)
    )  # fmt: skip
    UsageRecord.objects.bulk_create(
        UsageRecord(request_id=f"req-{start + i}", status="ok", provider="aimlapi", model=model,
                    route="summary", quality_score=100 - 10 * (i % 2))
        for i in range(positive + negative)
    )  # fmt: skip


def test_the_quality_page_shows_satisfaction_and_scores_against_the_90_percent_line() -> None:
    rated("gpt-4o-mini", 19, 1)
    rated("gpt-4o", 3, 2)

    response = member_of("Viewer").get(reverse("admin:routing_quality"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<strong>88.0%</strong> of 25 ratings positive, against the 90.0% target" in page
    by_model = {row.group: row for row in response.context["sections"][0]["rows"]}
    assert by_model["aimlapi/gpt-4o-mini"].satisfaction_pct == 95
    assert by_model["aimlapi/gpt-4o-mini"].meets is True
    assert by_model["aimlapi/gpt-4o"].meets is False
    assert by_model["aimlapi/gpt-4o-mini"].mean_score == 95
    assert response.context["data"]["target_pct"] == 90
    assert 'id="quality-data"' in page


def test_the_quality_page_is_refused_to_a_role_that_cannot_see_feedback() -> None:
    assert member_of("Finance").get(reverse("admin:routing_quality")).status_code == 403


def test_an_operator_edits_a_rule_weight_and_the_routing_table_carries_it() -> None:
    rule, _ = QualityRule.objects.get_or_create(key="slow", defaults={"weight": 20})

    response = member_of("Operator").post(
        reverse("admin:routing_qualityrule_change", args=[rule.pk]),
        {"weight": 35, "enabled": "on"},
    )

    assert response.status_code == 302
    assert build_table(1).quality.weights["slow"] == 35
    rule.refresh_from_db()
    rule.enabled = False
    rule.save()
    assert "slow" not in build_table(2).quality.weights


def test_a_weight_over_100_is_refused() -> None:
    rule, _ = QualityRule.objects.get_or_create(key="empty", defaults={"weight": 100})

    response = member_of("Operator").post(
        reverse("admin:routing_qualityrule_change", args=[rule.pk]), {"weight": 101}
    )

    assert response.status_code == 200  # the form again, with its error
    assert response.context["adminform"].form.errors["weight"]
