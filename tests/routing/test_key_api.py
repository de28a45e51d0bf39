"""The key-management API (scope `admin`): list, create, rotate with a grace period, revoke."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from routing.models import ClientKey, hash_key
from tests.factories import make_client_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_key() -> str:
    return make_client_key(name="ops", scopes=["admin"])


def call(method: str, path: str, key: str, body: dict[str, Any] | None = None) -> Any:
    return Client().generic(
        method,
        path,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def key_named(name: str) -> ClientKey:
    return ClientKey.objects.get(name=name, revoked_at__isnull=True, successor__isnull=True)


def test_the_list_shows_every_key_and_none_of_their_secrets(admin_key: str) -> None:
    raw = make_client_key(name="notes", scopes=["chat", "usage:read"])

    response = call("GET", "/api/v1/keys", admin_key)

    assert response.status_code == 200
    listed = {key["name"]: key for key in response.json()["data"]}
    assert set(listed) == {"ops", "notes"}
    notes = ClientKey.objects.get(name="notes")
    assert listed["notes"] == {
        "code": str(notes.code),
        "name": "notes",
        "prefix": notes.prefix,
        "environment": "prod",
        "scopes": ["chat", "usage:read"],
        "allowed_models": [],
        "created": listed["notes"]["created"],
        "last_used_at": None,
        "expires_at": None,
        "revoked_at": None,
        "rotated_from": None,
        "successor": None,
    }
    assert raw not in response.content.decode() and notes.key_hash not in response.content.decode()


def test_a_new_key_is_shown_once_and_stored_hashed() -> None:
    admin_key = make_client_key(name="staging ops", scopes=["admin"], env="staging")
    response = call(
        "POST",
        "/api/v1/keys",
        admin_key,
        {"name": "notes", "scopes": ["usage:read", "chat"], "environment": "staging"},
    )

    assert response.status_code == 201
    body = response.json()
    stored = ClientKey.objects.get(code=body["code"])
    assert stored.key_hash == hash_key(body["key"]) and body["key"].startswith("sb-staging-")
    assert stored.scopes == ["chat", "usage:read"] and stored.environment == "staging"
    listed = call("GET", "/api/v1/keys", admin_key).json()["data"]
    assert all("key" not in key for key in listed)
    assert call("GET", "/api/v1/usage", body["key"]).status_code == 200


def test_an_admin_key_manages_only_the_keys_of_its_own_environment(admin_key: str) -> None:
    make_client_key(name="dev notes", env="dev")
    dev = ClientKey.objects.get(name="dev notes")

    listed = {key["name"] for key in call("GET", "/api/v1/keys", admin_key).json()["data"]}
    minted = call(
        "POST", "/api/v1/keys", admin_key, {"name": "x", "scopes": ["chat"], "environment": "dev"}
    )
    rotated = call("POST", f"/api/v1/keys/{dev.code}/rotate", admin_key, {"grace_hours": 1})
    revoked = call("POST", f"/api/v1/keys/{dev.code}/revoke", admin_key)

    assert listed == {"ops"}
    assert minted.status_code == 403 and minted.json()["error"]["code"] == "environment_not_allowed"
    assert rotated.status_code == revoked.status_code == 404
    dev.refresh_from_db()
    assert dev.revoked_at is None and not ClientKey.objects.filter(name="x").exists()
    default = call("POST", "/api/v1/keys", admin_key, {"name": "y", "scopes": ["chat"]})
    assert default.status_code == 201 and default.json()["environment"] == "prod"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["chat"]}, "name"),
        ({"name": "notes", "scopes": ["chat", "everything"]}, "scopes"),
        ({"name": "notes", "scopes": []}, "scopes"),
        ({"name": "notes", "scopes": "chat"}, "scopes"),
        ({"name": "notes", "scopes": ["chat"], "environment": "moon"}, "environment"),
    ],
)
def test_a_bad_new_key_is_a_400_naming_the_field(
    admin_key: str, body: dict[str, Any], field: str
) -> None:
    response = call("POST", "/api/v1/keys", admin_key, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(f"{field}: ")
    assert not ClientKey.objects.filter(name="notes").exists()


def test_rotation_shows_the_successor_once_and_ends_the_old_key_after_the_grace(
    admin_key: str,
) -> None:
    old_raw = make_client_key(name="notes", scopes=["chat", "usage:read"])
    old = ClientKey.objects.get(name="notes")

    with time_machine.travel(timezone.now(), tick=False):
        response = call("POST", f"/api/v1/keys/{old.code}/rotate", admin_key, {"grace_hours": 1.5})
        rotated_at = timezone.now()

    assert response.status_code == 201
    body = response.json()
    successor = ClientKey.objects.get(key_hash=hash_key(body["key"]))
    assert body["code"] == str(successor.code) and body["rotated_from"] == str(old.code)
    assert successor.scopes == old.scopes and successor.name == "notes"
    old.refresh_from_db()
    assert old.expires_at == rotated_at + timedelta(hours=1.5)
    listed = {k["code"]: k for k in call("GET", "/api/v1/keys", admin_key).json()["data"]}
    assert listed[str(old.code)]["successor"] == str(successor.code)
    assert parse_datetime(listed[str(old.code)]["expires_at"]) == old.expires_at

    with time_machine.travel(rotated_at + timedelta(hours=1, minutes=29), tick=False):
        assert call("GET", "/api/v1/usage", old_raw).status_code == 200
    with time_machine.travel(rotated_at + timedelta(hours=1, minutes=30), tick=False):
        expired = call("GET", "/api/v1/usage", old_raw)
        assert call("GET", "/api/v1/usage", body["key"]).status_code == 200

    assert expired.status_code == 401
    assert expired.json()["error"] == {
        "message": "This API key has expired; use its successor.",
        "type": "authentication_error",
        "param": None,
        "code": "expired_api_key",
    }


@pytest.mark.parametrize(
    "body", [{}, {"grace_hours": -1}, {"grace_hours": 24 * 31}, {"grace_hours": "nan"}]
)
def test_a_rotation_without_a_sensible_grace_is_a_400_naming_it(
    admin_key: str, body: dict[str, Any]
) -> None:
    make_client_key(name="notes")
    old = ClientKey.objects.get(name="notes")

    response = call("POST", f"/api/v1/keys/{old.code}/rotate", admin_key, body)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("grace_hours: ")
    old.refresh_from_db()
    assert old.expires_at is None and ClientKey.objects.filter(name="notes").count() == 1


def test_a_key_is_rotated_once_then_its_successor_is(admin_key: str) -> None:
    make_client_key(name="notes")
    old = ClientKey.objects.get(name="notes")
    first = call("POST", f"/api/v1/keys/{old.code}/rotate", admin_key, {"grace_hours": 1})
    assert first.status_code == 201

    again = call("POST", f"/api/v1/keys/{old.code}/rotate", admin_key, {"grace_hours": 1})

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_rotated"
    successor = key_named("notes")
    onwards = call("POST", f"/api/v1/keys/{successor.code}/rotate", admin_key, {"grace_hours": 0})
    assert onwards.status_code == 201
    assert ClientKey.objects.filter(name="notes").count() == 3


def test_a_revoked_key_is_refused_at_once_and_cannot_be_rotated_or_revoked_again(
    admin_key: str,
) -> None:
    raw = make_client_key(name="notes", scopes=["usage:read"])
    key = ClientKey.objects.get(name="notes")

    response = call("POST", f"/api/v1/keys/{key.code}/revoke", admin_key)

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert parse_datetime(response.json()["revoked_at"]) == key.revoked_at
    refused = call("GET", "/api/v1/usage", raw)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    again = call("POST", f"/api/v1/keys/{key.code}/revoke", admin_key)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_revoked"
    rotate = call("POST", f"/api/v1/keys/{key.code}/rotate", admin_key, {"grace_hours": 1})
    assert rotate.status_code == 409 and rotate.json()["error"]["code"] == "key_revoked"


@pytest.mark.parametrize("action", ["rotate", "revoke"])
def test_an_unknown_key_is_a_404_in_the_error_body(admin_key: str, action: str) -> None:
    code = "00000000-0000-4000-8000-000000000000"

    response = call("POST", f"/api/v1/keys/{code}/{action}", admin_key, {"grace_hours": 1})

    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": f"No prod client key has the code {code}.",
        "type": "not_found_error",
        "param": None,
        "code": "key_not_found",
    }


def test_an_admin_key_may_revoke_itself_and_is_refused_afterwards(admin_key: str) -> None:
    me = ClientKey.objects.get(name="ops")

    assert call("POST", f"/api/v1/keys/{me.code}/revoke", admin_key).status_code == 200
    assert call("GET", "/api/v1/keys", admin_key).status_code == 401
