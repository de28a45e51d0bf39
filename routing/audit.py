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

from routing.engine import KEY_SCOPES_USED
from routing.models import ClientKey, Provider


@dataclass(frozen=True)
class Finding:
    kind: str  # client key | provider key
    subject: str  # which key: its name and prefix, or the provider
    problem: str
    action: str


def audit(redis: Any, unused_days: int = 30, now: datetime | None = None) -> list[Finding]:
    now = now or timezone.now()
    findings = client_key_findings(redis, unused_days, now)
    findings += provider_key_findings()
    return findings


def client_key_findings(redis: Any, unused_days: int, now: datetime) -> list[Finding]:
    findings = []
    since = now - timedelta(days=unused_days)
    used_scopes = _used_scopes(redis, since)
    for key in ClientKey.objects.active():
        subject = f"{key.name} ({key.prefix}…, {key.environment})"
        if key.expires_at is not None and key.expires_at <= now:
            findings.append(Finding("client key", subject, "expired but not revoked", "revoke it"))
            continue
        if key.last_used_at is None:
            if key.created < now - timedelta(days=1):
                findings.append(
                    Finding("client key", subject, "never used", "revoke it if nobody needs it")
                )
            continue
        if key.last_used_at < since:
            findings.append(
                Finding(
                    "client key",
                    subject,
                    f"unused for {(now - key.last_used_at).days} days",
                    "revoke it if nobody needs it",
                )
            )
            continue
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


def provider_key_findings() -> list[Finding]:
    """Provider keys found in plaintext in the database, and providers with no key at all."""
    findings = []
    secrets: dict[str, str] = {}
    for provider in Provider.objects.enabled():
        key = provider.api_key()
        if not key:
            findings.append(
                Finding("provider key", provider.name, "no API key configured", "set one")
            )
        elif len(key) >= 8:
            secrets[provider.name] = key
    if secrets:
        dump = _database_text()
        for name, key in secrets.items():
            if key in dump:
                findings.append(
                    Finding(
                        "provider key",
                        name,
                        "found in plaintext in the database",
                        "rotate it at the provider, then find and remove the copy",
                    )
                )
    return findings


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
