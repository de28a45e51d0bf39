"""Actions on the alert outbox. Any app raises an alert with `raise_alert()`.

    from project.alerts import raise_alert

    raise_alert(
        "budget_threshold",
        "budget:global:monthly",
        "Global monthly budget is 70% spent",
        severity="warning",
        period="2026-11",
        threshold=70,
        data={"spent_usd": "3500.00", "amount_usd": "5000"},
    )

The row is unique on (kind, subject, period, threshold), so every caller that
notices the same crossing, in any process, gets the same one row back and the
alert goes out once. Delivery is `project.jobs.deliver_alerts()`'s business.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from project.models import Alert, Channel
from project.transports import TransportError, transport_for

logger = logging.getLogger(__name__)


def raise_alert(
    kind: str,
    subject: str,
    title: str,
    *,
    severity: str = Alert.Severity.WARNING,
    period: str = "",
    threshold: str | int | Decimal = "",
    body: str = "",
    data: Mapping[str, Any] | None = None,
    recipients: Mapping[str, list[Any]] | None = None,
) -> tuple[Alert, bool]:
    """Put an alert in the outbox once; return it and whether this call created it.

    Safe to call on every check: a second call for the same crossing (same kind,
    subject, period and threshold) writes nothing, even when it races the first.
    ``recipients`` ({"channels": [ids], "emails": [addresses]}) addresses the alert
    to those alone; without it every enabled channel that receives the kind gets it.
    """
    severity = Alert.Severity(severity)  # ValueError for a severity that does not exist
    # get_or_create inserts inside a savepoint and, on the unique constraint's
    # IntegrityError, reads the row the other writer committed.
    alert, created = Alert.objects.get_or_create(
        kind=kind,
        subject=subject,
        period=period,
        threshold=str(threshold),
        defaults={
            "severity": severity,
            "title": title[:200],
            "body": body,
            "data": dict(data or {}),
            "recipients": dict(recipients or {}),
        },
    )
    if created:
        logger.info("alert raised: %s (%s) %s", alert, alert.severity, alert.code)
    return alert, created


def retry_alerts(alerts: QuerySet[Alert]) -> int:
    """Send these alerts again at the next delivery run (the admin's "retry now").

    A failed alert starts a fresh series of attempts; a pending one skips its backoff.
    Only channels that have not yet had the alert are sent it.
    """
    now = timezone.now()
    restarted = alerts.filter(status=Alert.Status.FAILED).update(
        status=Alert.Status.PENDING, attempts=0, next_attempt_at=now
    )
    hurried = alerts.filter(status=Alert.Status.PENDING, next_attempt_at__gt=now).update(
        next_attempt_at=now
    )
    return restarted + hurried


def send_test_alert(channel: Channel) -> str | None:
    """Send a test alert to one channel now, outside the outbox; return the error, if any."""
    alert = Alert(
        kind="channel_test",
        severity=Alert.Severity.INFO,
        subject=f"channel:{channel.code}",
        title=f"Test alert for {channel.name}",
        body="If you can read this, Switchboard can send alerts to this channel.",
    )
    try:
        transport_for(channel).notify(alert)
    except TransportError as exc:
        logger.warning("test alert to channel %s (%s) failed: %s", channel.code, channel.kind, exc)
        return exc.message
    return None
