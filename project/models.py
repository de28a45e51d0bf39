"""The alert outbox: where alerts go (Channel), what happened (Alert), each try (DeliveryAttempt).

An app that notices a state change calls `project.alerts.raise_alert()`, which
inserts one Alert row, unique per crossing; `project.jobs.deliver_alerts()`
claims due rows atomically and sends them through `project.transports`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    URLValidator,
    validate_email,
)
from django.db import models
from django.db.models import F
from django.utils import timezone

from project.secrets import EncryptedTextField, decrypt, encrypt


class ChannelQuerySet(models.QuerySet["Channel"]):
    def enabled(self) -> ChannelQuerySet:
        return self.filter(enabled=True)


class Channel(models.Model):
    """Where alerts are sent: an email address or a (Slack-compatible) webhook URL."""

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook (Slack-compatible)"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100)
    # A webhook URL usually holds a secret token in its path: it is stored
    # encrypted, never logged, never written to an audit row; what may be shown
    # of it (its scheme and host; an email address whole) is kept beside it.
    target_encrypted = EncryptedTextField(editable=False)
    target_shown = models.CharField(max_length=500, editable=False)
    enabled = models.BooleanField(default=True)
    alert_kinds = models.JSONField(
        default=list,
        blank=True,
        help_text='Alert kinds this channel receives, e.g. ["budget_threshold"]; '
        "empty receives every kind.",
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        """An email address, or the webhook URL (http or https); decrypted on each read."""
        return decrypt(self.target_encrypted) if self.target_encrypted else ""

    @target.setter
    def target(self, value: str) -> None:
        self.target_encrypted = encrypt(value) if value else ""
        self.target_shown = shown_target(value)

    def clean(self) -> None:
        if self.kind == self.Kind.EMAIL:
            try:
                validate_email(self.target)
            except ValidationError:
                raise ValidationError({"target": "Enter an email address."}) from None
        elif self.kind == self.Kind.WEBHOOK:
            try:
                URLValidator(schemes=["http", "https"])(self.target)
            except ValidationError:
                raise ValidationError({"target": "Enter an http(s) URL."}) from None
        if not isinstance(self.alert_kinds, list) or not all(
            isinstance(kind, str) for kind in self.alert_kinds
        ):
            raise ValidationError({"alert_kinds": 'A list of kinds, e.g. ["provider_down"].'})

    def receives(self, alert_kind: str) -> bool:
        return not self.alert_kinds or alert_kind in self.alert_kinds

    def target_display(self) -> str:
        """What may be shown of the target: an email address whole, a URL only by its host."""
        return self.target_shown


def shown_target(value: str) -> str:
    if "://" not in value:
        return value  # an email address
    parts = urlsplit(value)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/…"


class AlertQuerySet(models.QuerySet["Alert"]):
    def due(self, now: datetime) -> AlertQuerySet:
        return self.filter(status=Alert.Status.PENDING, next_attempt_at__lte=now).order_by(
            "next_attempt_at", "id"
        )

    def claim(self, alert_id: int, now: datetime) -> bool:
        """Take one due alert for this worker. True for exactly one of any racing workers.

        A conditional UPDATE, not read-modify-save: the database re-checks
        `status = pending` under the row lock, so a second worker updates nothing.
        """
        claimed = self.filter(
            id=alert_id, status=Alert.Status.PENDING, next_attempt_at__lte=now
        ).update(status=Alert.Status.DELIVERING, claimed_at=now, attempts=F("attempts") + 1)
        return claimed == 1

    def stuck(self, claimed_before: datetime) -> AlertQuerySet:
        return self.filter(status=Alert.Status.DELIVERING, claimed_at__lt=claimed_before)


class Alert(models.Model):
    """One outbox row: something worth telling an operator, and how far its delivery got."""

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERING = "delivering", "Delivering"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    kind = models.SlugField(max_length=64, help_text="e.g. budget_threshold, provider_down")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    subject = models.CharField(max_length=200, help_text="What it is about: budget:global:monthly")
    period = models.CharField(max_length=32, blank=True, help_text="e.g. 2026-11")
    threshold = models.CharField(max_length=32, blank=True, help_text='e.g. "70"; empty if none')
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Delivery attempts started.")
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # Empty: every enabled channel that receives the alert's kind. Otherwise the alert
    # goes to these only: {"channels": [channel ids], "emails": ["a@example.com"]}
    # (an incident's escalation level names its contacts). Written with the row, in
    # the one INSERT, so no worker can claim the alert before its addressees are known.
    recipients = models.JSONField(default=dict, blank=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            # A crossing alerts once per period, however many workers notice it.
            models.UniqueConstraint(
                fields=["kind", "subject", "period", "threshold"],
                name="project_alert_once_per_crossing",
            )
        ]
        indexes = [
            # Serves deliver_alerts(): pending rows whose next attempt is due, oldest first;
            # its status prefix also serves the scan for rows stuck in 'delivering'.
            models.Index(fields=["status", "next_attempt_at"], name="project_alert_due"),
        ]

    def __str__(self) -> str:
        return " ".join(
            part for part in (self.kind, self.subject, self.period, self.threshold) if part
        )

    def payload(self) -> dict[str, Any]:
        """What a receiving system may read of this alert (the webhook's `switchboard` key)."""
        return {
            "code": str(self.code),
            "kind": self.kind,
            "severity": self.severity,
            "subject": self.subject,
            "period": self.period,
            "threshold": self.threshold,
            "title": self.title,
            "created": self.created.isoformat(),
            "data": self.data,
        }


class DeliveryAttempt(models.Model):
    """The audit row for one try of one alert on one channel. Never holds the target."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    # The audit outlives a deleted channel; its name is kept by value.
    channel = models.ForeignKey(
        Channel, on_delete=models.SET_NULL, null=True, related_name="deliveries"
    )
    channel_name = models.CharField(max_length=100)
    # An email address the alert was addressed to directly (an escalation level's
    # user), where there is no channel; empty for a channel.
    address = models.CharField(max_length=254, blank=True)
    attempt = models.PositiveSmallIntegerField(help_text="Which of the alert's attempts.")
    created = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["created", "id"]
        indexes = [
            # Serves a retry's question "which channels already have this alert?".
            models.Index(fields=["alert", "ok"], name="project_attempt_alert_ok"),
        ]

    def __str__(self) -> str:
        outcome = "ok" if self.ok else f"failed: {self.error}"
        return f"{self.alert} → {self.channel_name} (attempt {self.attempt}) {outcome}"


class IncidentQuerySet(models.QuerySet["Incident"]):
    def unresolved(self) -> IncidentQuerySet:
        return self.exclude(status=Incident.Status.RESOLVED)

    def due_to_escalate(self, now: datetime) -> IncidentQuerySet:
        return self.filter(status=Incident.Status.OPEN, escalate_at__lte=now).order_by(
            "escalate_at", "id"
        )


class Incident(models.Model):
    """Something is wrong in production, and someone must own it until it is resolved.

    Opened by `project.incidents.open_incident()` (a rollback trigger, an operator);
    everything that happens to it is an `IncidentEvent` on its timeline.
    """

    class Kind(models.TextChoices):
        PROVIDER_OUTAGE = "provider_outage", "Provider outage"
        BUDGET_EXCEEDED = "budget_exceeded", "Budget exceeded"
        ROLLBACK = "rollback", "Rollback"
        KEY_COMPROMISE = "key_compromise", "Key compromise"
        OTHER = "other", "Other"

    class Severity(models.TextChoices):
        CRITICAL = "critical", "Critical"
        MAJOR = "major", "Major"
        MINOR = "minor", "Minor"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.MAJOR)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    # What the incident is about ("rollout:7"): while one is unresolved, every
    # caller that notices the same trouble gets that one incident back.
    subject = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    opened_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    root_cause = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    # The escalation ladder: the highest level alerted so far (0: none yet), and when
    # the next one is due; empty once acknowledged, resolved or past the last level.
    level = models.PositiveSmallIntegerField(default=0)
    escalate_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject"],
                condition=~models.Q(status="resolved"),
                name="project_incident_one_unresolved_per_subject",
            )
        ]
        indexes = [
            # Serves escalate_incidents(): open incidents whose next level is due.
            models.Index(fields=["status", "escalate_at"], name="project_incident_escalate"),
        ]

    def __str__(self) -> str:
        return f"{self.get_severity_display()} {self.get_kind_display()}: {self.title}"

    @property
    def runbook(self) -> str:
        """The slug of the runbook for this kind (docs/runbooks/<slug>.md); "" for none."""
        return self.kind if self.kind in RUNBOOKS else ""


# Runbooks in docs/runbooks/, by slug (= the incident kind they answer).
RUNBOOKS: dict[str, str] = {
    Incident.Kind.PROVIDER_OUTAGE: "Provider outage",
    Incident.Kind.BUDGET_EXCEEDED: "Budget exceeded",
    Incident.Kind.ROLLBACK: "Rollback",
    Incident.Kind.KEY_COMPROMISE: "Key compromise",
}


class EscalationLevel(models.Model):
    """One rung of the escalation ladder: who is alerted, how long after an incident opens.

    Four levels, seeded with the customer's ladder (development team at once,
    engineering management at 15 min, executives at 30, vendor support at 60); their
    names, times and contacts are set in the admin.
    """

    number = models.PositiveSmallIntegerField(
        unique=True, validators=[MinValueValidator(1), MaxValueValidator(4)]
    )
    name = models.CharField(max_length=100)
    starts_after_minutes = models.PositiveIntegerField(
        help_text="Minutes after the incident opened at which this level is alerted, "
        "unless someone has acknowledged it by then."
    )
    users = models.ManyToManyField(
        "auth.User",
        blank=True,
        related_name="+",
        help_text="Alerted by email, at the address on their account.",
    )
    channels = models.ManyToManyField(
        Channel,
        blank=True,
        related_name="escalation_levels",
        help_text="Alert channels (email or webhook) this level is sent to, whatever "
        "kinds of alerts they otherwise receive.",
    )

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"Level {self.number}: {self.name}"

    def clean(self) -> None:
        others = EscalationLevel.objects.exclude(pk=self.pk)
        earlier = others.filter(number__lt=self.number)
        later = others.filter(number__gt=self.number)
        if self.number == 1 and self.starts_after_minutes:
            raise ValidationError({"starts_after_minutes": "Level 1 is alerted at once: 0."})
        if earlier.filter(starts_after_minutes__gte=self.starts_after_minutes).exists() or (
            later.filter(starts_after_minutes__lte=self.starts_after_minutes).exists()
        ):
            raise ValidationError(
                {"starts_after_minutes": "Each level starts later than the one before it."}
            )


class IncidentEvent(models.Model):
    """One entry on an incident's timeline."""

    class Kind(models.TextChoices):
        OPENED = "opened", "Opened"
        TRIGGER = "trigger", "Triggered again"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        ESCALATED = "escalated", "Escalated"
        NOTE = "note", "Note"
        RESOLVED = "resolved", "Resolved"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    # Who did it; empty for the system (a trigger, the escalation ladder).
    actor = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    text = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.get_kind_display()}"
