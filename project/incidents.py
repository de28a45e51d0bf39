"""Actions on incidents. Any app opens one with `open_incident()`.

    from project.incidents import open_incident

    incident, created = open_incident(
        "rollback", "rollout:7", "Rollout of summary rolled back: availability 97.2%",
        severity="critical", summary="...", data={"availability": "97.2"},
    )

While an incident about a subject is unresolved, every further call for that
subject (from any process) returns it and adds a "triggered again" event to its
timeline instead of opening a second one.

A new incident climbs the escalation ladder (`EscalationLevel`, four levels set
in the admin): level 1 is alerted at once, and `project.jobs.escalate_incidents`
(every 30 s) alerts each further level when its time since opening has passed,
until someone acknowledges the incident. Each level's alert is an outbox row
unique on (incident, level), addressed to that level's contacts, so a level is
alerted once however many workers notice it is due. Resolving needs a root cause.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from project.alerts import raise_alert
from project.models import Alert, EscalationLevel, Incident, IncidentEvent

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
    now = timezone.now()
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                kind=kind,
                subject=subject,
                title=title[:200],
                severity=severity,
                summary=summary,
                data=dict(data or {}),
                opened_at=now,
                # Level 1 is due now: escalate_incident() below alerts it.
                escalate_at=now,
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
    escalate_incident(incident.pk, now)
    incident.refresh_from_db()
    return incident, True


def open_incident_once(kind: str, subject: str, title: str, **fields: Any) -> tuple[Incident, bool]:
    """Open an incident about ``subject`` unless there has ever been one (open or resolved).

    For a condition checked again and again that should page once per episode:
    put the episode in the subject (``budget:3:2026-11``), and a resolved incident
    is not reopened by the next check while the condition still holds.
    """
    existing = Incident.objects.filter(subject=subject).order_by("-opened_at").first()
    if existing is not None:
        return existing, False
    return open_incident(kind, subject, title, **fields)


def note_unresolved(subject: str, text: str, *, data: Mapping[str, Any] | None = None) -> bool:
    """Add a note to the unresolved incident about ``subject``, if there is one."""
    incident = Incident.objects.unresolved().filter(subject=subject).first()
    if incident is None:
        return False
    record_event(incident, IncidentEvent.Kind.NOTE, text, data=data)
    return True


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


# -- the escalation ladder ----------------------------------------------------------------


def escalate_incident(incident_id: int, now: datetime | None = None) -> list[int]:
    """Alert every level of this incident's ladder that is due by ``now``; return their numbers.

    Safe to run twice and in racing workers: a level is taken by a conditional
    UPDATE from the level below it (and only while nobody has acknowledged the
    incident), inside the transaction that raises its alert and writes its event.
    """
    now = now or timezone.now()
    levels = ladder()
    alerted: list[int] = []
    while True:
        incident = Incident.objects.get(pk=incident_id)
        if (
            incident.status != Incident.Status.OPEN
            or incident.escalate_at is None
            or incident.escalate_at > now
        ):
            return alerted
        following = [level for level in levels if level.number > incident.level]
        if not following:  # past the last level: the ladder is done
            Incident.objects.filter(pk=incident.pk, level=incident.level).update(escalate_at=None)
            return alerted
        level, after = following[0], following[1] if len(following) > 1 else None
        with transaction.atomic():
            taken = Incident.objects.filter(
                pk=incident.pk, status=Incident.Status.OPEN, level=incident.level
            ).update(level=level.number, escalate_at=_due(incident, after))
            if not taken:
                continue  # acknowledged or escalated meanwhile: look again
            alert = alert_level(incident, level)
            record_event(
                incident,
                IncidentEvent.Kind.ESCALATED,
                f"Alerted level {level.number} ({level.name}): {contacts_text(level)}",
                data={"level": level.number, "alert": str(alert.code)},
            )
        logger.warning("incident %s escalated to level %d", incident.code, level.number)
        alerted.append(level.number)


# The customer's ladder (CHECKLIST.md, "Escalation Procedures"): the migration seeds it.
DEFAULT_LADDER = [
    (1, "Development team", 0),
    (2, "Engineering management", 15),
    (3, "Executive team", 30),
    (4, "External vendor support", 60),
]


def ladder() -> list[EscalationLevel]:
    """The escalation levels, lowest first; the customer's four if there are none at all."""
    levels = list(EscalationLevel.objects.order_by("number"))
    if not levels:
        for number, name, minutes in DEFAULT_LADDER:
            EscalationLevel.objects.get_or_create(
                number=number, defaults={"name": name, "starts_after_minutes": minutes}
            )
        levels = list(EscalationLevel.objects.order_by("number"))
    return levels


def _due(incident: Incident, level: EscalationLevel | None) -> datetime | None:
    if level is None:
        return None
    return incident.opened_at + timedelta(minutes=level.starts_after_minutes)


def reschedule_open_incidents() -> int:
    """After the ladder's times changed: set when each open incident's next level is due."""
    levels = ladder()
    changed = 0
    for incident in Incident.objects.filter(status=Incident.Status.OPEN):
        after = next((level for level in levels if level.number > incident.level), None)
        changed += Incident.objects.filter(
            pk=incident.pk, status=Incident.Status.OPEN, level=incident.level
        ).update(escalate_at=_due(incident, after))
    return changed


def recipients_of(level: EscalationLevel) -> dict[str, list[Any]]:
    """The level's contacts as an alert's recipients; empty (every channel) when it has none."""
    channels = sorted(level.channels.values_list("id", flat=True))
    emails = sorted({email for email in level.users.values_list("email", flat=True) if email})
    if not channels and not emails:
        return {}
    return {"channels": channels, "emails": emails}


def contacts_text(level: EscalationLevel) -> str:
    names = [user.get_username() for user in level.users.all()]
    names += [channel.name for channel in level.channels.all()]
    return ", ".join(names) or "no contacts set: every channel that receives incident alerts"


SEVERITY_OF_ALERT = {
    Incident.Severity.CRITICAL: Alert.Severity.CRITICAL,
    Incident.Severity.MAJOR: Alert.Severity.CRITICAL,
    Incident.Severity.MINOR: Alert.Severity.WARNING,
}


def alert_level(incident: Incident, level: EscalationLevel) -> Alert:
    """Put this level's alert about the incident in the outbox (once per incident and level)."""
    minutes = level.starts_after_minutes
    lines = [
        incident.summary,
        "",
        f"Escalation level {level.number} ({level.name})"
        + (f": nobody has acknowledged it in {minutes} min." if minutes else "."),
        f"Acknowledge and follow it: {incident_url(incident)}",
    ]
    if incident.runbook:
        lines.append(f"Runbook: {runbook_url(incident.runbook)}")
    alert, _ = raise_alert(
        "incident",
        f"incident:{incident.pk}",
        f"[L{level.number} {level.name}] {incident.get_severity_display()} "
        f"{incident.get_kind_display().lower()}: {incident.title}",
        severity=SEVERITY_OF_ALERT[Incident.Severity(incident.severity)],
        threshold=level.number,
        body="\n".join(lines).strip(),
        data={
            "incident": str(incident.code),
            "kind": incident.kind,
            "level": level.number,
            "level_name": level.name,
            "url": incident_url(incident),
            "runbook": runbook_url(incident.runbook) if incident.runbook else "",
        },
        recipients=recipients_of(level),
    )
    return alert


def incident_url(incident: Incident) -> str:
    path = reverse("admin:project_incident_change", args=[incident.pk])
    return f"{settings.SWITCHBOARD_BASE_URL.rstrip('/')}{path}"


def runbook_url(slug: str) -> str:
    path = reverse(f"admin:project_runbook_{slug}")
    return f"{settings.SWITCHBOARD_BASE_URL.rstrip('/')}{path}"


# -- what people do -----------------------------------------------------------------------


def acknowledge(incident: Incident, user: User, text: str = "") -> bool:
    """Someone owns the incident now: the ladder stops. False if it was not open."""
    now = timezone.now()
    with transaction.atomic():
        taken = Incident.objects.filter(pk=incident.pk, status=Incident.Status.OPEN).update(
            status=Incident.Status.ACKNOWLEDGED,
            acknowledged_at=now,
            acknowledged_by=user,
            escalate_at=None,
        )
        if taken:
            record_event(incident, IncidentEvent.Kind.ACKNOWLEDGED, text, actor=user)
    incident.refresh_from_db()
    if taken:
        logger.info("incident %s acknowledged by %s", incident.code, user.get_username())
    return bool(taken)


def add_note(incident: Incident, user: User, text: str) -> IncidentEvent:
    if not text.strip():
        raise ValidationError({"text": "Write the note."})
    return record_event(incident, IncidentEvent.Kind.NOTE, text.strip(), actor=user)


def resolve(incident: Incident, user: User, root_cause: str) -> None:
    """Close the incident; it needs a root cause. Stops the ladder if it still ran."""
    root_cause = root_cause.strip()
    if not root_cause:
        raise ValidationError(
            {"root_cause": "Say what the root cause was: an incident is resolved with one."}
        )
    now = timezone.now()
    with transaction.atomic():
        taken = (
            Incident.objects.unresolved()
            .filter(pk=incident.pk)
            .update(
                status=Incident.Status.RESOLVED,
                resolved_at=now,
                root_cause=root_cause,
                escalate_at=None,
            )
        )
        if not taken:
            raise ValidationError("This incident is resolved already.")
        record_event(incident, IncidentEvent.Kind.RESOLVED, root_cause, actor=user)
    incident.refresh_from_db()
    logger.info("incident %s resolved by %s", incident.code, user.get_username())
