"""Actions on incidents. Any app opens one with `open_incident()`.

    from project.incidents import open_incident

    incident, created = open_incident(
        "rollback", "rollout:7", "Rollout of summary rolled back: availability 97.2%",
        severity="critical", summary="...", data={"availability": "97.2"},
    )

While an incident about a subject is unresolved, every further call for that
subject (from any process) returns it and adds a "triggered again" event to its
timeline instead of opening a second one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from project.models import Incident, IncidentEvent

logger = logging.getLogger(__name__)


def open_incident(
    kind: str,
    subject: str,
    title: str,
    *,
    severity: str = Incident.Severity.MAJOR,
    summary: str = "",
    data: Mapping[str, Any] | None = None,
) -> tuple[Incident, bool]:
    """Open an incident about ``subject``, or note a new trigger on the one already open."""
    kind, severity = Incident.Kind(kind), Incident.Severity(severity)
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                kind=kind,
                subject=subject,
                title=title[:200],
                severity=severity,
                summary=summary,
                data=dict(data or {}),
            )
            IncidentEvent.objects.create(
                incident=incident, kind=IncidentEvent.Kind.OPENED, text=title, data=dict(data or {})
            )
    except IntegrityError:
        # One is unresolved already (perhaps opened this instant by another process).
        incident = Incident.objects.unresolved().get(subject=subject)
        record_event(incident, IncidentEvent.Kind.TRIGGER, title, data=data)
        return incident, False
    logger.warning("incident opened: %s (%s) %s", incident, incident.subject, incident.code)
    return incident, True


def record_event(
    incident: Incident,
    kind: str,
    text: str = "",
    *,
    actor: User | None = None,
    data: Mapping[str, Any] | None = None,
) -> IncidentEvent:
    return IncidentEvent.objects.create(
        incident=incident,
        kind=IncidentEvent.Kind(kind),
        text=text,
        actor=actor,
        data=dict(data or {}),
    )
