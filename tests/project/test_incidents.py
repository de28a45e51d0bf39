"""Incidents: one unresolved incident per subject, whoever notices the trouble."""

from __future__ import annotations

import pytest
from django.utils import timezone

from project.incidents import open_incident
from project.models import Incident, IncidentEvent

pytestmark = pytest.mark.django_db


def test_opening_an_incident_starts_its_timeline_and_alerts_level_1() -> None:
    incident, created = open_incident(
        "rollback", "rollout:1", "Rolled back: availability 97%", severity="critical"
    )
    assert created
    assert incident.status == Incident.Status.OPEN
    assert list(incident.events.values_list("kind", flat=True)) == [
        IncidentEvent.Kind.OPENED,
        IncidentEvent.Kind.ESCALATED,
    ]
    assert incident.level == 1


def test_the_same_trouble_again_is_a_new_trigger_on_the_open_incident() -> None:
    first, _ = open_incident("rollback", "rollout:1", "Availability 97%")
    again, created = open_incident("rollback", "rollout:1", "Availability 95%")
    assert (again.pk, created) == (first.pk, False)
    assert Incident.objects.count() == 1
    triggers = again.events.exclude(kind=IncidentEvent.Kind.ESCALATED)
    assert [e.text for e in triggers] == ["Availability 97%", "Availability 95%"]


def test_once_resolved_the_same_subject_opens_a_new_incident() -> None:
    first, _ = open_incident("provider_outage", "provider:openai", "OpenAI down")
    Incident.objects.filter(pk=first.pk).update(
        status=Incident.Status.RESOLVED, resolved_at=timezone.now()
    )
    second, created = open_incident("provider_outage", "provider:openai", "OpenAI down again")
    assert created and second.pk != first.pk


def test_an_unknown_kind_or_severity_is_refused() -> None:
    with pytest.raises(ValueError):
        open_incident("meteor", "x", "y")
    with pytest.raises(ValueError):
        open_incident("other", "x", "y", severity="apocalyptic")
