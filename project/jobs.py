"""RQ jobs of the alert outbox. Safe to run twice, and in any number of workers at once.

`deliver_alerts` runs every 10 s (project/cron.py). Like healthchecks'
`sendalerts`, each worker claims a row with a conditional UPDATE before it
sends anything, so two workers never deliver the same alert. Delivery is
at least once: a worker that dies mid-send leaves its row in 'delivering',
and after SWITCHBOARD_ALERT_CLAIM_TIMEOUT_SECONDS another worker takes it
over, skipping every channel that already has an ok audit row.
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from project.incidents import escalate_incident
from project.models import Alert, Channel, DeliveryAttempt, Incident
from project.transports import TransportError, redact, transport_for

logger = logging.getLogger(__name__)

NO_CHANNEL = "no enabled channel receives this kind of alert"
# Stop claiming more alerts after this long, well inside RQ's job timeout; the
# next run (10 s later) carries on with the rest.
RUN_SECONDS = 60.0


def deliver_alerts(batch_size: int = 50) -> int:
    """Deliver every due alert this run can claim; return how many it claimed."""
    reclaim_stuck_alerts(timezone.now())
    stop_at = time.monotonic() + RUN_SECONDS
    claimed = 0
    due = list(Alert.objects.due(timezone.now()).values_list("id", flat=True)[:batch_size])
    for alert_id in due:
        if time.monotonic() > stop_at:
            break
        # Claimed one at a time, at the moment of sending, so that claimed_at says
        # when this worker really started on it (the stuck-row clock).
        if Alert.objects.claim(alert_id, timezone.now()):
            claimed += 1
            deliver_claimed_alert(alert_id)
    return claimed


def reclaim_stuck_alerts(now: datetime) -> int:
    """Put back alerts whose worker died mid-delivery; fail those out of attempts."""
    cutoff = now - timedelta(seconds=settings.SWITCHBOARD_ALERT_CLAIM_TIMEOUT_SECONDS)
    stuck = Alert.objects.stuck(cutoff)
    # Each UPDATE re-checks status and claimed_at, so two workers reclaiming
    # at once cannot both act on a row.
    given_up = stuck.filter(attempts__gte=settings.SWITCHBOARD_ALERT_MAX_ATTEMPTS).update(
        status=Alert.Status.FAILED, last_error="the worker delivering it stopped (last attempt)"
    )
    retried = stuck.update(
        status=Alert.Status.PENDING,
        next_attempt_at=now,
        last_error="the worker delivering it stopped; retrying",
    )
    if given_up or retried:
        logger.warning("reclaimed %d stuck alert(s), gave up on %d", retried, given_up)
    return given_up + retried


def deliver_claimed_alert(alert_id: int) -> Alert.Status:
    """Send one alert this worker has claimed to every recipient that does not have it yet.

    Its recipients are the channels and addresses it names (an incident's
    escalation level), else every enabled channel that receives its kind.
    """
    alert = Alert.objects.get(id=alert_id)
    claimed_at = alert.claimed_at
    delivered = alert.deliveries.filter(ok=True)
    already = set(delivered.exclude(channel=None).values_list("channel_id", flat=True))
    already_addresses = set(delivered.exclude(address="").values_list("address", flat=True))
    if alert.recipients:
        named = Channel.objects.enabled().filter(id__in=alert.recipients.get("channels", []))
        channels = [channel for channel in named if channel.id not in already]
        addresses = [a for a in alert.recipients.get("emails", []) if a not in already_addresses]
        channels += [address_channel(address) for address in addresses]
    else:
        channels = [
            channel
            for channel in Channel.objects.enabled()
            if channel.receives(alert.kind) and channel.id not in already
        ]
    errors = [error for channel in channels if (error := _attempt(alert, channel))]
    if not channels and not already and not already_addresses:
        errors = [NO_CHANNEL]
    return _finish(alert, claimed_at, errors)


def address_channel(address: str) -> Channel:
    """An unsaved email channel for one address an alert names (a user of an escalation level)."""
    channel = Channel(kind=Channel.Kind.EMAIL, name=address)
    channel.target = address
    return channel


def escalate_incidents() -> int:
    """Alert the next level of every open incident whose time for it has come.

    Runs every 30 s (project/cron.py). A periodic sweep rather than one scheduled
    job per incident and level: nothing to cancel on acknowledgement, nothing lost
    if Redis loses its scheduled jobs, and a ladder whose times change in the
    admin applies to incidents already open. Returns how many levels it alerted.
    """
    now = timezone.now()
    due = Incident.objects.due_to_escalate(now).values_list("id", flat=True)
    return sum(len(escalate_incident(incident_id, now)) for incident_id in due)


def backoff_seconds(attempts: int) -> int:
    """How long to wait after the given number of failed attempts (1 → the first delay)."""
    schedule = settings.SWITCHBOARD_ALERT_BACKOFF_SECONDS
    return int(schedule[min(attempts, len(schedule)) - 1])


def _attempt(alert: Alert, channel: Channel) -> str:
    """Try one channel, write its audit row; return the error ("" when it went out)."""
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    try:
        status_code = transport_for(channel).notify(alert)
    except TransportError as exc:
        status_code, error = exc.status_code, exc.message
    except Exception as exc:  # a bug in one transport must not strand the alert
        error = f"unexpected error ({type(exc).__name__})"
        logger.error(
            "alert %s to channel %s: %s",
            alert.code,
            channel.code,
            redact(traceback.format_exc(), channel.target),
        )
    DeliveryAttempt.objects.create(
        alert=alert,
        channel=channel if channel.pk else None,
        channel_name=channel.name,
        address="" if channel.pk else channel.target,
        attempt=alert.attempts,
        ok=not error,
        status_code=status_code,
        error=error[:500],
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    if error:
        logger.warning(
            "alert %s (%s) to channel %r (%s) failed on attempt %d: %s",
            alert.code,
            alert.kind,
            channel.name,
            channel.kind,
            alert.attempts,
            error,
        )
    else:
        logger.info(
            "alert %s (%s) delivered to channel %r (%s)",
            alert.code,
            alert.kind,
            channel.name,
            channel.kind,
        )
    return f"{channel.name}: {error}" if error else ""


def _finish(alert: Alert, claimed_at: datetime | None, errors: list[str]) -> Alert.Status:
    now = timezone.now()
    # Only while this worker still holds the claim: if the row was reclaimed as
    # stuck meanwhile, its new owner decides what happens to it.
    mine = Alert.objects.filter(id=alert.id, status=Alert.Status.DELIVERING, claimed_at=claimed_at)
    if not errors:
        mine.update(status=Alert.Status.DELIVERED, delivered_at=now, last_error="")
        return Alert.Status.DELIVERED
    last_error = "; ".join(errors)[:500]
    if alert.attempts >= settings.SWITCHBOARD_ALERT_MAX_ATTEMPTS:
        mine.update(status=Alert.Status.FAILED, last_error=last_error)
        logger.error(
            "alert %s (%s) failed after %d attempts", alert.code, alert.kind, alert.attempts
        )
        return Alert.Status.FAILED
    retry_at = now + timedelta(seconds=backoff_seconds(alert.attempts))
    mine.update(status=Alert.Status.PENDING, next_attempt_at=retry_at, last_error=last_error)
    return Alert.Status.PENDING
