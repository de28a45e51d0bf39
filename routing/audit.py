"""The key audit: client and provider keys that need someone's attention.

`manage.py audit_keys` prints it and exits non-zero when anything needs action;
the client-key admin shows the same report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from routing.engine import CREDENTIAL_REFUSED, KEY_SCOPES_USED
from routing.models import ClientKey, Provider, ProviderCredential


@dataclass(frozen=True)
class Finding:
    kind: str  # client key | provider key
    subject: str  # which key: its name and prefix, or the provider
    problem: str
    action: str


def audit(
    redis: Any, unused_days: int = 30, now: datetime | None = None, rotation_days: int | None = None
) -> list[Finding]:
    """``rotation_days``: the age at which a client key is due for rotation (0: never)."""
    from django.conf import settings

    now = now or timezone.now()
    if rotation_days is None:
        rotation_days = settings.SWITCHBOARD["CLIENT_KEY_ROTATION_DAYS"]
    findings = client_key_findings(redis, unused_days, now, rotation_days)
    findings += provider_key_findings(redis, unused_days, now)
    return findings


def client_key_findings(
    redis: Any, unused_days: int, now: datetime, rotation_days: int = 90
) -> list[Finding]:
    findings = []
    since = now - timedelta(days=unused_days)
    used_scopes = _used_scopes(redis, since)
    for key in ClientKey.objects.active().select_related("successor"):
        subject = f"{key.name} ({key.prefix}…, {key.environment})"
        if key.expires_at is not None and key.expires_at <= now:
            findings.append(Finding("client key", subject, "expired but not revoked", "revoke it"))
            continue
        rotating = hasattr(key, "successor")  # already rotated: its grace period is running
        if rotation_days and not rotating and key.created <= now - timedelta(days=rotation_days):
            findings.append(
                Finding(
                    "client key",
                    subject,
                    f"overdue for rotation ({(now - key.created).days} days old; "
                    f"rotate every {rotation_days})",
                    "rotate it with a grace period, then move its services to the successor",
                )
            )
        idle = idleness(key.last_used_at, key.created, now, since)
        if idle is not None:
            findings.append(Finding("client key", subject, idle, "revoke it if nobody needs it"))
            continue
        if key.last_used_at is None:
            continue  # new, and not used yet
        unused = sorted(set(key.scopes) - used_scopes.get(key.pk, set()))
        if unused and key.created < since:
            findings.append(
                Finding(
                    "client key",
                    subject,
                    f"scopes not used in {unused_days} days: {', '.join(unused)}",
                    "rotate it to a key without them",
                )
            )
    return findings


def provider_key_findings(redis: Any, unused_days: int, now: datetime) -> list[Finding]:
    """Provider credentials: missing, overdue, unused, refused, or found in plaintext."""
    findings = []
    since = now - timedelta(days=unused_days)
    refused = _refused_credentials(redis, since)
    secrets: dict[str, str] = {}
    credentials = ProviderCredential.objects.enabled().select_related("provider")
    with_credentials = set()
    for credential in credentials:
        with_credentials.add(credential.provider_id)
        subject = f"{credential.provider.name} {credential.environment} ({credential.source})"
        key = credential.secret()
        if not key:
            findings.append(
                Finding(
                    "provider key",
                    subject,
                    f"${credential.api_key_env} is not set",
                    "set the variable in the gateway's environment",
                )
            )
            continue
        if len(key) >= 8:
            secrets[subject] = key
        if credential.is_overdue(now):
            due = credential.rotation_due_at
            assert due is not None
            findings.append(
                Finding(
                    "provider key",
                    subject,
                    f"overdue for rotation since {due:%Y-%m-%d}",
                    "create a new key at the provider, add it, then disable this one",
                )
            )
        if credential.pk in refused and (
            credential.last_used_at is None or credential.last_used_at < refused[credential.pk]
        ):
            findings.append(
                Finding(
                    "provider key",
                    subject,
                    f"refused by the provider on {refused[credential.pk]:%Y-%m-%d %H:%M} UTC",
                    "check the key at the provider and replace it",
                )
            )
        elif idle := idleness(credential.last_used_at, credential.created, now, since):
            findings.append(
                Finding("provider key", subject, idle, "disable it if nothing needs it")
            )
    for provider in Provider.objects.enabled().exclude(pk__in=with_credentials):
        findings.append(
            Finding("provider key", provider.name, "no API key for any environment", "add one")
        )
    if secrets:
        dump = _database_text()
        for subject, key in secrets.items():
            if key in dump:
                findings.append(
                    Finding(
                        "provider key",
                        subject,
                        "found in plaintext in the database",
                        "rotate it at the provider, then find and remove the copy",
                    )
                )
    return findings


def idleness(
    last_used: datetime | None, created: datetime, now: datetime, since: datetime
) -> str | None:
    """ "never used" (once a day old), "unused for N days" (not since ``since``), or None."""
    if last_used is None:
        return "never used" if created < now - timedelta(days=1) else None
    if last_used < since:
        return f"unused for {(now - last_used).days} days"
    return None


def _refused_credentials(redis: Any, since: datetime) -> dict[int, datetime]:
    refused = {}
    for field, value in redis.hgetall(CREDENTIAL_REFUSED).items():
        stamp = datetime.fromtimestamp(int(value.split()[0]), tz=UTC)
        if stamp >= since:
            refused[int(field)] = stamp
    return refused


def _used_scopes(redis: Any, since: datetime) -> dict[int, set[str]]:
    used: dict[int, set[str]] = {}
    for field, stamp in redis.hgetall(KEY_SCOPES_USED).items():
        key_id, _, scope = field.decode().partition(":")
        if datetime.fromtimestamp(int(stamp), tz=UTC) >= since:
            used.setdefault(int(key_id), set()).add(scope)
    return used


def _database_text() -> str:
    """Every row of every table as text: where a secret must never be."""
    rows: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)
