"""The incident pages in the admin: the board of open incidents, acknowledging, notes,
resolving with a root cause, the runbooks, and the ladder's contacts. Permission
checks walk anonymous → wrong role → right role."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from project import runbooks
from project.incidents import open_incident
from project.models import RUNBOOKS, Channel, EscalationLevel, Incident, IncidentEvent
from tests.project.test_roles import member_of

pytestmark = pytest.mark.django_db

BOARD = "/admin/project/incident/board/"


def rollback() -> Incident:
    incident, _ = open_incident(
        "rollback",
        "rollout:3",
        "Rollout of summary rolled back: p95 2.4x baseline",
        severity="critical",
    )
    return incident


def act_url(incident: Incident) -> str:
    return f"/admin/project/incident/{incident.pk}/act/"


def test_the_board_shows_open_incidents_with_their_timeline_and_runbook() -> None:
    incident = rollback()
    resolved, _ = open_incident("other", "x", "Old trouble")
    Incident.objects.filter(pk=resolved.pk).update(status="resolved")

    page = member_of("Viewer").get(BOARD)

    assert page.status_code == 200
    html = page.content.decode()
    assert incident.title in html and "Old trouble" not in html
    assert "Alerted level 1 (Development team)" in html
    assert "/admin/project/incident/runbooks/rollback/" in html
    assert "Acknowledge</button>" not in html, "a viewer is shown no buttons"

    operator_html = member_of("Operator").get(BOARD).content.decode()
    assert "Acknowledge</button>" in operator_html and "Resolve</button>" in operator_html


def test_acknowledging_from_the_board_needs_the_operator_role() -> None:
    incident = rollback()

    anonymous = Client().post(act_url(incident), {"act": "acknowledge"})
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    for role in ("Viewer", "Finance", "Stakeholder"):
        assert member_of(role).post(act_url(incident), {"act": "acknowledge"}).status_code == 403
    incident.refresh_from_db()
    assert incident.status == Incident.Status.OPEN

    response = member_of("Operator").post(
        act_url(incident), {"act": "acknowledge", "text": "On it", "next": BOARD}
    )

    assert (response.status_code, response["Location"]) == (302, BOARD)
    incident.refresh_from_db()
    assert incident.status == Incident.Status.ACKNOWLEDGED
    assert incident.acknowledged_by == User.objects.get(username="operator")
    assert incident.escalate_at is None


def test_the_act_url_takes_only_posts_and_known_acts() -> None:
    incident = rollback()
    operator = member_of("Operator")
    assert operator.get(act_url(incident)).status_code == 405
    assert operator.post(act_url(incident), {"act": "delete"}).status_code == 400
    assert operator.post("/admin/project/incident/999/act/", {"act": "note"}).status_code == 404


def test_resolving_without_a_root_cause_is_refused_with_a_message() -> None:
    incident = rollback()
    operator = member_of("Operator")

    page = operator.post(act_url(incident), {"act": "resolve", "root_cause": " "}, follow=True)

    assert "Say what the root cause was" in page.content.decode()
    incident.refresh_from_db()
    assert incident.status == Incident.Status.OPEN

    operator.post(act_url(incident), {"act": "note", "text": "Legacy path serves everyone."})
    operator.post(act_url(incident), {"act": "resolve", "root_cause": "Cold cache on the new arm"})
    incident.refresh_from_db()
    assert (incident.status, incident.root_cause) == ("resolved", "Cold cache on the new arm")
    assert list(incident.events.values_list("kind", "actor__username")) == [
        ("opened", None),
        ("escalated", None),
        ("note", "operator"),
        ("resolved", "operator"),
    ]


def test_an_offsite_next_is_not_followed() -> None:
    incident = rollback()
    response = member_of("Operator").post(
        act_url(incident), {"act": "note", "text": "x", "next": "https://evil.example/"}
    )
    assert response["Location"] == f"/admin/project/incident/{incident.pk}/change/"


def test_the_change_page_shows_the_timeline_the_runbook_and_the_actions() -> None:
    incident = rollback()
    html = member_of("Operator").get(f"/admin/project/incident/{incident.pk}/change/")
    content = html.content.decode()
    assert html.status_code == 200
    assert "Timeline" in content and "Alerted level 1" in content
    assert 'href="/admin/project/incident/runbooks/rollback/"' in content
    assert "Resolve</button>" in content


def test_the_admin_actions_acknowledge_and_resolve_with_a_root_cause_form() -> None:
    first, second = rollback(), open_incident("other", "manual:1", "Checkout slow")[0]
    operator = member_of("Operator")
    changelist = "/admin/project/incident/"

    operator.post(changelist, {"action": "acknowledge_selected", "_selected_action": [first.pk]})
    first.refresh_from_db()
    assert first.status == Incident.Status.ACKNOWLEDGED

    selected = {"action": "resolve_selected", "_selected_action": [first.pk, second.pk]}
    form = operator.post(changelist, selected)
    assert form.status_code == 200 and "Root cause" in form.content.decode()
    empty = operator.post(changelist, {**selected, "apply": "yes", "root_cause": ""})
    assert empty.status_code == 200 and "This field is required" in empty.content.decode()
    assert Incident.objects.unresolved().count() == 2

    done = operator.post(changelist, {**selected, "apply": "yes", "root_cause": "Bad deploy"})

    assert done.status_code == 302
    assert set(Incident.objects.values_list("status", "root_cause")) == {("resolved", "Bad deploy")}


def test_a_viewer_gets_no_incident_actions() -> None:
    incident = rollback()
    response = member_of("Viewer").post(
        "/admin/project/incident/",
        {"action": "acknowledge_selected", "_selected_action": [incident.pk]},
    )
    assert response.status_code in (200, 302)
    incident.refresh_from_db()
    assert incident.status == Incident.Status.OPEN


@pytest.mark.parametrize("slug", list(RUNBOOKS))
def test_each_runbook_is_rendered_in_the_admin(slug: str) -> None:
    page = member_of("Stakeholder").get(f"/admin/project/incident/runbooks/{slug}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1" in html and "<h2" in html and "Escalation" in html
    assert "Acknowledge" in html and "Resolve" in html


def test_a_link_to_another_runbook_opens_its_page_in_the_admin() -> None:
    html = runbooks.render_runbook("provider_outage")
    assert 'href="/admin/project/incident/runbooks/key_compromise/"' in html
    assert 'href="key_compromise.md"' not in html


def test_runbooks_are_for_staff_who_may_see_incidents() -> None:
    response = Client().get("/admin/project/incident/runbooks/rollback/")
    assert response.status_code == 302


def test_raw_html_in_a_runbook_is_shown_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rollback.md").write_text(
        "# Title\n\n<script>alert(1)</script>\n\nA **step** <b onclick='x()'>here</b>.\n"
    )
    monkeypatch.setattr(runbooks, "RUNBOOK_DIR", tmp_path)

    html = runbooks.render_runbook("rollback")

    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b onclick" not in html and "<strong>step</strong>" in html


def test_only_known_runbooks_are_read() -> None:
    with pytest.raises(KeyError):
        runbooks.runbook_path("../../SECURITY")


def test_an_operator_sets_a_levels_contacts_and_time_in_the_admin() -> None:
    incident = rollback()
    channel = Channel.objects.create(kind="email", name="eng-managers", target="em@example.com")
    manager = User.objects.create_user("maria", "maria@example.com", "pw")
    level = EscalationLevel.objects.get(number=2)
    url = f"/admin/project/escalationlevel/{level.pk}/change/"
    operator = member_of("Operator")

    too_late = {"name": "Engineering management", "starts_after_minutes": 45}
    refused = operator.post(url, {**too_late, "users": [manager.pk], "channels": [channel.pk]})
    assert refused.status_code == 200
    assert "Each level starts later than the one before it" in refused.content.decode()

    saved = operator.post(
        url,
        {
            "name": "Engineering managers",
            "starts_after_minutes": 10,
            "users": [manager.pk],
            "channels": [channel.pk],
        },
    )

    assert saved.status_code == 302
    level.refresh_from_db()
    assert (level.name, level.starts_after_minutes) == ("Engineering managers", 10)
    assert list(level.users.all()) == [manager] and list(level.channels.all()) == [channel]
    incident.refresh_from_db()
    assert incident.escalate_at == incident.opened_at + timedelta(minutes=10)
    assert member_of("Viewer").post(url, {**too_late}).status_code == 403
    assert operator.get("/admin/project/escalationlevel/add/").status_code == 403


def test_the_ladder_page_lists_the_levels_and_their_contacts() -> None:
    EscalationLevel.objects.get(number=1).users.add(User.objects.create_user("dev"))
    html = member_of("Finance").get("/admin/project/escalationlevel/").content.decode()
    assert "Development team" in html and "External vendor support" in html
    assert "dev" in html
    assert IncidentEvent.objects.count() == 0
