"""Client keys over their life: limited models, expiry, rotation with a grace period, last use."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import openai
import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from routing.jobs import persist_key_usage
from routing.models import ClientKey, hash_key
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def sdk(gateway: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)


def test_a_key_limited_to_some_models_is_refused_the_others(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    ClientKey.objects.update(allowed_models=["summary"])
    client = sdk(gateway, client_key)

    client.chat.completions.create(model="summary", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)

    assert caught.value.code == "model_not_allowed"
    assert demo.count("openai") == 0
    assert [m.id for m in client.models.list()] == ["summary"]
    client.close()


def test_an_expired_key_stops_working(gateway: str, client_key: str, demo: SimulatorHandle) -> None:
    ClientKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    with sdk(gateway, client_key) as client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="summary", messages=MESSAGES)

    assert caught.value.code == "expired_api_key"


def test_rotation_keeps_the_old_key_for_its_grace_period_then_only_the_new_one_works(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    old = ClientKey.objects.get()
    out = StringIO()
    call_command("rotate_client_key", old.prefix, "--grace-hours", "2", stdout=out)
    new_key = out.getvalue().strip().splitlines()[-1]
    successor = ClientKey.objects.get(key_hash=hash_key(new_key))
    assert successor.rotated_from == old and successor.scopes == old.scopes

    for key in (client_key, new_key):
        with sdk(gateway, key) as client:
            client.chat.completions.create(model="summary", messages=MESSAGES)

    with time_machine.travel(timezone.now() + timedelta(hours=2, minutes=1), tick=True):
        with sdk(gateway, client_key) as client, pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="summary", messages=MESSAGES)
        with sdk(gateway, new_key) as client:
            client.chat.completions.create(model="summary", messages=MESSAGES)


def test_the_admin_rotates_one_key_and_shows_its_successor_once(client_key: str) -> None:
    staff = Client()
    staff.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    old = ClientKey.objects.get()

    chosen = {"action": "rotate", "_selected_action": [old.pk]}

    asked = staff.post("/admin/routing/clientkey/", chosen)
    assert b"Grace period (hours)" in asked.content and not ClientKey.objects.exclude(pk=old.pk)
    before = timezone.now()
    page = staff.post("/admin/routing/clientkey/", {**chosen, "apply": "1", "grace_hours": "6"})

    raw = page.context["raw_key"]
    assert ClientKey.objects.get(key_hash=hash_key(raw)).rotated_from == old
    old.refresh_from_db()
    assert old.expires_at is not None
    assert timedelta(hours=6) <= old.expires_at - before < timedelta(hours=6, minutes=1)
    again = staff.post("/admin/routing/clientkey/", {**chosen, "apply": "1", "grace_hours": "1"})
    assert ClientKey.objects.count() == 2, "a key is rotated once; its successor is next"
    assert b"already rotated" in staff.get(again.url).content


def test_last_use_reaches_the_admin_without_a_query_on_the_request_path(
    openai_client: openai.OpenAI,
) -> None:
    key = ClientKey.objects.get()
    assert key.last_used_at is None

    openai_client.chat.completions.create(model="summary", messages=MESSAGES)
    assert persist_key_usage() == 2  # the client key, and the provider credential it sent

    key.refresh_from_db()
    assert key.last_used_at is not None
    assert timezone.now() - key.last_used_at < timedelta(minutes=1)
    assert persist_key_usage() == 0, "only ever moves forward"
