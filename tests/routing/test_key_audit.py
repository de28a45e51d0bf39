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

from routing.audit import audit
from routing.engine import KEY_SCOPES_USED
from routing.models import ClientKey, Provider
from tests.factories import make_client_key

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


def test_a_provider_key_in_plaintext_in_the_database_is_found(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-leaked-0123456789abcdef"
    monkeypatch.setenv("LEAKY_KEY", secret)
    Provider.objects.create(
        name="leaky", protocol="openai", base_url="http://127.0.0.1:9/v1", api_key_env="LEAKY_KEY"
    )
    with connection.cursor() as cursor:  # a careless copy into a free-text column
        cursor.execute("UPDATE routing_provider SET vendor = %s WHERE name = 'leaky'", [secret])

    assert problems(redis)["leaky"] == "found in plaintext in the database"


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
