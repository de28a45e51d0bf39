"""The escalation ladder: level 1 at once, levels 2, 3 and 4 at 15, 30 and 60 minutes,
unless someone acknowledges the incident; each level's contacts get its alert.

Time is frozen and moved with time-machine; delivery goes through the real outbox,
to Django's locmem mailbox and a real webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.core.exceptions import ValidationError

from project.incidents import (
    acknowledge,
    add_note,
    open_incident,
    reschedule_open_incidents,
    resolve,
)
from project.jobs import deliver_alerts, escalate_incidents
from project.models import Alert, Channel, EscalationLevel, Incident, IncidentEvent
from tests.project.test_alerts import in_threads
from tests.servers import WebhookReceiver

START = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def levels_alerted(incident: Incident) -> list[int]:
    thresholds = Alert.objects.filter(kind="incident", subject=f"incident:{incident.pk}")
    return sorted(int(t) for t in thresholds.values_list("threshold", flat=True))


def open_rollback() -> Incident:
    incident, created = open_incident(
        "rollback",
        "rollout:7",
        "Rollout of summary rolled back: availability 97.2%",
        severity="critical",
        summary="Availability of the new arm fell below 99% over 10 minutes.",
    )
    assert created
    return incident


def operator(name: str = "olga", email: str = "olga@example.com") -> User:
    return User.objects.create_user(name, email, "pw", is_staff=True)


def test_the_migration_seeds_the_customers_four_levels(db: None) -> None:
    assert list(EscalationLevel.objects.values_list("number", "name", "starts_after_minutes")) == [
        (1, "Development team", 0),
        (2, "Engineering management", 15),
        (3, "Executive team", 30),
        (4, "External vendor support", 60),
    ]


def test_opening_an_incident_alerts_level_1_at_once(db: None) -> None:
    with time_machine.travel(START, tick=False):
        incident = open_rollback()

    assert levels_alerted(incident) == [1]
    assert (incident.level, incident.escalate_at) == (1, START + timedelta(minutes=15))
    alert = Alert.objects.get(kind="incident")
    assert alert.title == (
        "[L1 Development team] Critical rollback: Rollout of summary rolled back: "
        "availability 97.2%"
    )
    assert alert.severity == "critical"
    assert f"/admin/project/incident/{incident.pk}/change/" in alert.body
    assert "/admin/project/incident/runbooks/rollback/" in alert.body
    escalated = incident.events.get(kind=IncidentEvent.Kind.ESCALATED)
    assert escalated.text.startswith("Alerted level 1 (Development team)")


def test_levels_2_3_and_4_are_alerted_at_15_30_and_60_minutes_and_not_before(db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        expected = [(15, [1, 2]), (30, [1, 2, 3]), (60, [1, 2, 3, 4])]
        elapsed = timedelta(0)
        for minutes, levels in expected:
            just_before = timedelta(minutes=minutes) - timedelta(seconds=1)
            clock.shift(just_before - elapsed)
            escalate_incidents()
            assert levels_alerted(incident) == levels[:-1], f"too early at {just_before}"

            clock.shift(timedelta(seconds=1))
            elapsed = timedelta(minutes=minutes)
            assert escalate_incidents() == 1
            assert levels_alerted(incident) == levels, f"not alerted at {minutes} min"

        clock.shift(timedelta(hours=4))
        assert escalate_incidents() == 0

    incident.refresh_from_db()
    assert (incident.level, incident.escalate_at) == (4, None)
    assert [e.data["level"] for e in incident.events.filter(kind="escalated")] == [1, 2, 3, 4]


def test_acknowledging_stops_the_ladder(db: None) -> None:
    olga = operator()
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        clock.shift(timedelta(minutes=20))
        escalate_incidents()
        assert levels_alerted(incident) == [1, 2]

        assert acknowledge(incident, olga, "Looking at the rollout's gate metrics.")
        clock.shift(timedelta(hours=2))
        assert escalate_incidents() == 0

    assert levels_alerted(incident) == [1, 2]
    incident.refresh_from_db()
    assert incident.status == Incident.Status.ACKNOWLEDGED
    assert (incident.acknowledged_by, incident.acknowledged_at) == (
        olga,
        START + timedelta(minutes=20),
    )
    assert incident.escalate_at is None
    ack = incident.events.get(kind=IncidentEvent.Kind.ACKNOWLEDGED)
    assert (ack.actor, ack.text) == (olga, "Looking at the rollout's gate metrics.")
    assert not acknowledge(incident, operator("piet", "piet@example.com"))  # once only


def test_a_worker_that_ran_late_alerts_every_level_that_came_due(db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        clock.shift(timedelta(minutes=45))
        assert escalate_incidents() == 2
    assert levels_alerted(incident) == [1, 2, 3]


def test_running_the_job_twice_alerts_a_level_once(db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        clock.shift(timedelta(minutes=15))
        assert escalate_incidents() == 1
        assert escalate_incidents() == 0
    assert levels_alerted(incident) == [1, 2]
    assert incident.events.filter(kind="escalated").count() == 2


def test_two_workers_escalating_at_once_alert_a_level_once(transactional_db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        clock.shift(timedelta(minutes=15))
        results = in_threads(4, escalate_incidents)

    assert sorted(results) == [0, 0, 0, 1]
    assert levels_alerted(incident) == [1, 2]
    assert incident.events.filter(kind="escalated").count() == 2


def test_the_same_trouble_again_does_not_restart_the_ladder(db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        clock.shift(timedelta(minutes=5))
        again, created = open_incident("rollback", "rollout:7", "Still rolled back")
    assert (again.pk, created) == (incident.pk, False)
    assert levels_alerted(incident) == [1]
    assert again.escalate_at == START + timedelta(minutes=15)


def test_each_level_reaches_its_own_contacts_by_email_and_webhook(
    db: None, webhook: WebhookReceiver
) -> None:
    developer = User.objects.create_user("dev", "dev@example.com", "pw")
    User.objects.create_user("nomail", "", "pw")
    level_1 = EscalationLevel.objects.get(number=1)
    level_1.users.add(developer, User.objects.get(username="nomail"))
    managers = Channel.objects.create(kind="webhook", name="eng-managers", target=webhook.url())
    EscalationLevel.objects.get(number=2).channels.add(managers)
    # Receives every kind of alert, but is nobody's contact on the ladder.
    Channel.objects.create(kind="email", name="finance", target="finance@example.com")

    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        assert deliver_alerts() == 1
        [message] = mail.outbox
        assert message.to == ["dev@example.com"]
        assert message.subject.startswith("[Switchboard critical] [L1 Development team]")
        assert webhook.requests == []

        clock.shift(timedelta(minutes=15))
        escalate_incidents()
        assert deliver_alerts() == 1

    [request] = webhook.requests
    body = request["body"]
    assert body["text"].startswith("[CRITICAL] [L2 Engineering management] Critical rollback")
    assert body["switchboard"]["subject"] == f"incident:{incident.pk}"
    assert body["switchboard"]["threshold"] == "2"
    assert body["switchboard"]["data"]["runbook"].endswith(
        "/admin/project/incident/runbooks/rollback/"
    )
    assert len(mail.outbox) == 1  # nobody else, and not the finance channel
    level_2 = Alert.objects.get(kind="incident", threshold="2")
    assert list(level_2.deliveries.values_list("channel_name", "ok")) == [("eng-managers", True)]
    level_1_alert = Alert.objects.get(kind="incident", threshold="1")
    assert list(level_1_alert.deliveries.values_list("address", "ok")) == [
        ("dev@example.com", True)
    ]


def test_a_failed_webhook_is_retried_without_emailing_the_level_twice(
    db: None, webhook: WebhookReceiver
) -> None:
    level_1 = EscalationLevel.objects.get(number=1)
    level_1.users.add(User.objects.create_user("dev", "dev@example.com", "pw"))
    level_1.channels.add(Channel.objects.create(kind="webhook", name="dev", target=webhook.url()))
    webhook.statuses = [503]
    with time_machine.travel(START, tick=False) as clock:
        open_rollback()
        deliver_alerts()
        clock.shift(timedelta(seconds=31))
        deliver_alerts()

    alert = Alert.objects.get(kind="incident")
    assert alert.status == Alert.Status.DELIVERED
    assert len(webhook.requests) == 2 and len(mail.outbox) == 1


def test_a_level_without_contacts_goes_to_every_channel_that_receives_incident_alerts(
    db: None,
) -> None:
    Channel.objects.create(kind="email", name="ops", target="ops@example.com")
    Channel.objects.create(
        kind="email", name="budgets", target="b@example.com", alert_kinds=["budget_threshold"]
    )
    open_rollback()
    deliver_alerts()
    assert [message.to for message in mail.outbox] == [["ops@example.com"]]


def test_changing_a_levels_time_moves_the_next_escalation_of_open_incidents(db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        EscalationLevel.objects.filter(number=2).update(starts_after_minutes=5)
        reschedule_open_incidents()
        clock.shift(timedelta(minutes=5))
        escalate_incidents()
    assert levels_alerted(incident) == [1, 2]


def test_resolving_needs_a_root_cause(db: None) -> None:
    olga = operator()
    incident = open_rollback()

    with pytest.raises(ValidationError) as refused:
        resolve(incident, olga, "   ")
    assert "root cause" in str(refused.value)
    incident.refresh_from_db()
    assert incident.status == Incident.Status.OPEN

    add_note(incident, olga, "Traffic is back on the legacy path.")
    resolve(incident, olga, "The new prompt template doubled output tokens.")
    incident.refresh_from_db()
    assert incident.status == Incident.Status.RESOLVED
    assert incident.root_cause == "The new prompt template doubled output tokens."
    assert incident.escalate_at is None
    assert list(incident.events.values_list("kind", flat=True)) == [
        "opened",
        "escalated",
        "note",
        "resolved",
    ]
    with pytest.raises(ValidationError):
        resolve(incident, olga, "again")


def test_a_resolved_incident_escalates_no_further(db: None) -> None:
    with time_machine.travel(START, tick=False) as clock:
        incident = open_rollback()
        resolve(incident, operator(), "A flaky gate metric; fixed its window.")
        clock.shift(timedelta(hours=1))
        assert escalate_incidents() == 0
    assert levels_alerted(incident) == [1]


def test_an_empty_note_is_refused(db: None) -> None:
    with pytest.raises(ValidationError):
        add_note(open_rollback(), operator(), " ")
