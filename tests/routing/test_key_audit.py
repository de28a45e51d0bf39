"""The key audit finds keys that need action, and says nothing when none do."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from redis import Redis

from routing.actions import rotate_client_key
from routing.audit import audit
from routing.engine import CREDENTIAL_REFUSED, KEY_SCOPES_USED
from routing.models import ClientKey, Provider, ProviderCredential
from tests.factories import make_client_key, make_provider

pytestmark = pytest.mark.django_db


def key_named(name: str, **fields: object) -> ClientKey:
    make_client_key(name=name, scopes=["chat", "usage:read"])
    ClientKey.objects.filter(name=name).update(**fields)
    return ClientKey.objects.get(name=name)


def problems(redis: Redis) -> dict[str, str]:
    return {f.subject.split(" ")[0]: f.problem for f in audit(redis, unused_days=30)}


def test_each_kind_of_neglected_client_key_is_found(redis: Redis) -> None:
    now = timezone.now()
    old = now - timedelta(days=60)
    key_named("idle", created=old, last_used_at=now - timedelta(days=45))
    key_named("never", created=old)
    key_named("expired", created=old, expires_at=now - timedelta(hours=1), last_used_at=now)
    broad = key_named("broad", created=old, last_used_at=now)
    redis.hset(KEY_SCOPES_USED, f"{broad.pk}:chat", int(now.timestamp()))
    healthy = key_named("healthy", created=old, last_used_at=now)
    for scope in ("chat", "usage:read"):
        redis.hset(KEY_SCOPES_USED, f"{healthy.pk}:{scope}", int(now.timestamp()))

    found = problems(redis)

    assert found == {
        "idle": "unused for 45 days",
        "never": "never used",
        "expired": "expired but not revoked",
        "broad": "scopes not used in 30 days: usage:read",
    }


def test_a_client_key_older_than_the_rotation_age_is_overdue(redis: Redis) -> None:
    now = timezone.now()
    old = key_named("old", created=now - timedelta(days=100), last_used_at=now)
    for scope in ("chat", "usage:read"):
        redis.hset(KEY_SCOPES_USED, f"{old.pk}:{scope}", int(now.timestamp()))

    found = audit(redis, unused_days=30, rotation_days=90)

    assert [f.problem for f in found] == ["overdue for rotation (100 days old; rotate every 90)"]
    rotate_client_key(old, timedelta(hours=1))  # rotated: its successor is new, it is expiring
    assert not [f for f in audit(redis, rotation_days=90) if f.subject.startswith("old")]


def test_a_provider_key_in_plaintext_in_the_database_is_found(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-leaked-0123456789abcdef"
    monkeypatch.setenv("LEAKY_KEY", secret)
    provider = make_provider("leaky", {})
    ProviderCredential.objects.create(provider=provider, api_key_env="LEAKY_KEY")
    ProviderCredential.objects.update(last_used_at=timezone.now())
    with connection.cursor() as cursor:  # a careless copy into a free-text column
        cursor.execute("UPDATE routing_provider SET vendor = %s WHERE name = 'leaky'", [secret])

    assert problems(redis)["leaky"] == "found in plaintext in the database"


def test_each_kind_of_neglected_provider_credential_is_found(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = timezone.now()
    monkeypatch.delenv("UNSET_KEY", raising=False)
    for name, fields in {
        "overdue": {"rotated_at": now - timedelta(days=31), "last_used_at": now},
        "idle": {"last_used_at": now - timedelta(days=40)},
        "never": {"created": now - timedelta(days=3)},
        "refused": {"last_used_at": now - timedelta(hours=2)},
        "healthy": {"rotation_days": 0, "last_used_at": now},
    }.items():
        make_provider(name)
        ProviderCredential.objects.filter(provider__name=name).update(**fields)
    refused = ProviderCredential.objects.get(provider__name="refused")
    redis.hset(CREDENTIAL_REFUSED, str(refused.pk), f"{int(now.timestamp())} invalid_api_key")
    unset = make_provider("unset", {})
    ProviderCredential.objects.create(provider=unset, api_key_env="UNSET_KEY")
    Provider.objects.create(name="keyless", protocol="openai", base_url="http://127.0.0.1:9/v1")

    found = problems(redis)

    due = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    assert found == {
        "overdue": f"overdue for rotation since {due}",
        "idle": "unused for 40 days",
        "never": "never used",
        "refused": f"refused by the provider on {now:%Y-%m-%d %H:%M} UTC",
        "unset": "$UNSET_KEY is not set",
        "keyless": "no API key for any environment",
    }


def test_the_command_exits_non_zero_when_something_needs_action(redis: Redis) -> None:
    out = StringIO()
    call_command("audit_keys", stdout=out)
    assert "nothing needs action" in out.getvalue()

    key_named("never", created=timezone.now() - timedelta(days=3))
    with pytest.raises(SystemExit) as exited:
        call_command("audit_keys", stdout=out)
    assert exited.value.code == 1
    assert "never used" in out.getvalue()


def test_the_admin_shows_the_audit_to_staff_only(redis: Redis) -> None:
    key_named("never", created=timezone.now() - timedelta(days=3))
    assert Client().get("/admin/routing/clientkey/audit/").status_code == 302
    staff = Client()
    staff.force_login(User.objects.create_superuser("sec", "sec@example.com", "pw"))

    page = staff.get("/admin/routing/clientkey/audit/")

    assert page.status_code == 200 and b"never used" in page.content
