"""The results page and the rollout page: who sees them, who presses their buttons."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from billing.models import UsageRecord
from project.models import Incident
from routing.models import Deployment, Experiment, Rollout, Route, Variant
from tests.factories import load_demo_config

pytestmark = pytest.mark.django_db


def member_of(role: str) -> Client:
    user = User.objects.create_user(role.lower(), password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def experiment() -> Experiment:
    load_demo_config("http://127.0.0.1:9")
    experiment = Experiment.objects.create(name="models", route=Route.objects.get(name="summary"))
    for position, label in enumerate(["aimlapi", "openai"]):
        Variant.objects.create(
            experiment=experiment,
            name=label,
            position=position,
            deployment=Deployment.objects.get(provider__name=label, name="gpt-4o-mini"),
        )
    return experiment


def record(n: int, arm: str, latency: int, **fields: object) -> None:
    UsageRecord.objects.create(
        request_id=f"r{arm}{n}",
        status="ok",
        route="summary",
        latency_ms=latency,
        end_user=f"u{n}",
        **fields,
        **({"experiment": "models", "arm": arm} if "rollout_arm" not in fields else {}),
    )


def test_an_operator_starts_an_experiment_and_reads_its_verdict(experiment: Experiment) -> None:
    operator = member_of("Operator")
    url = f"/admin/routing/experiment/{experiment.pk}/results/"

    operator.post(url, {"action": "start"})
    experiment.refresh_from_db()
    assert experiment.status == "running"
    for n in range(20):
        record(n, "aimlapi", 100 + n)
        record(n, "openai", 400 + n)
    page = operator.get(url).content.decode()

    assert "openai is slower, p=" in page
    assert "Promote the winner" in page
    assert "no data" in page  # satisfaction: no feedback yet


def test_a_viewer_reads_the_results_but_cannot_promote(experiment: Experiment) -> None:
    viewer = member_of("Viewer")
    url = f"/admin/routing/experiment/{experiment.pk}/results/"

    assert viewer.get(url).status_code == 200
    assert "Promote the winner" not in viewer.get(url).content.decode()
    variant = experiment.variants.get(name="openai")
    assert viewer.post(url, {"action": "promote", "variant": variant.pk}).status_code == 403
    experiment.refresh_from_db()
    assert experiment.status == "draft"


def test_promote_from_the_page_puts_the_winner_first(experiment: Experiment) -> None:
    operator = member_of("Operator")
    url = f"/admin/routing/experiment/{experiment.pk}/results/"
    operator.post(url, {"action": "start"})

    operator.post(url, {"action": "promote", "variant": experiment.variants.get(name="openai").pk})

    assert str(Route.objects.get(name="summary").chain()[0]) == "openai/gpt-4o-mini"
    from auditlog.models import LogEntry

    assert LogEntry.objects.filter(content_type__model="routestep").exists()


def test_the_rollout_page_shows_both_arms_and_refuses_to_advance_without_traffic() -> None:
    load_demo_config("http://127.0.0.1:9")
    now = timezone.now()
    Rollout.objects.all().delete()  # the demo's draft: one rollout per route
    rollout = Rollout.objects.create(
        route=Route.objects.get(name="summary"),
        legacy_chain=["openai/gpt-4o-mini"],
        status="running",
        percent=25,
        started_at=now,
        phase_started_at=now,
        baseline_p50_ms=100,
    )
    for n in range(3):
        record(n, "legacy", 110, rollout_arm="legacy")
    operator = member_of("Operator")
    url = f"/admin/routing/rollout/{rollout.pk}/dashboard/"

    page = operator.get(url).content.decode()
    assert "legacy path" in page and "new path" in page
    assert "the new arm has 0 requests in this phase; the gate needs 20" in page

    response = operator.post(url, {"action": "advance"}, follow=True)
    assert "Not advanced: the new arm has 0 requests" in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.percent == 25

    response = operator.post(url, {"action": "rollback", "reason": "drill"}, follow=True)
    assert "Rolled back: every user is on the legacy path." in response.content.decode()
    rollout.refresh_from_db()
    assert (rollout.status, rollout.percent) == ("rolled_back", 0)
    assert Incident.objects.get().subject == f"rollout:{rollout.pk}"


def test_a_stakeholder_sees_the_rollout_but_cannot_roll_it_back() -> None:
    load_demo_config("http://127.0.0.1:9")
    Rollout.objects.all().delete()  # the demo's draft: one rollout per route
    rollout = Rollout.objects.create(
        route=Route.objects.get(name="summary"),
        legacy_chain=["openai/gpt-4o-mini"],
        status="running",
        percent=50,
    )
    stakeholder = member_of("Stakeholder")
    url = f"/admin/routing/rollout/{rollout.pk}/dashboard/"

    assert stakeholder.get(url).status_code == 200
    assert stakeholder.post(url, {"action": "rollback"}).status_code == 403
    rollout.refresh_from_db()
    assert rollout.percent == 50


def test_only_those_who_may_change_a_rollout_can_archive_it() -> None:
    load_demo_config("http://127.0.0.1:9")
    rollout = Rollout.objects.get()  # the demo's draft
    data = {"action": "archive", "_selected_action": [rollout.pk]}

    member_of("Viewer").post("/admin/routing/rollout/", data)
    rollout.refresh_from_db()
    assert rollout.status == "draft"

    member_of("Operator").post("/admin/routing/rollout/", data)
    rollout.refresh_from_db()
    assert rollout.status == "archived"
