"""The admin, as an operator uses it: every page renders, a new key is shown once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from routing.models import ClientKey, hash_key
from tests.servers import SimulatorHandle

PAGES = [
    "routing_provider",
    "routing_deployment",
    "routing_route",
    "routing_clientkey",
    "routing_breakerevent",
    "billing_usagerecord",
    "billing_budget",
]


@pytest.fixture
def staff(transactional_db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


@pytest.mark.parametrize("page", PAGES)
def test_each_changelist_renders_for_staff_and_not_for_anonymous(
    staff: Client, demo: SimulatorHandle, page: str
) -> None:
    url = reverse(f"admin:{page}_changelist")

    assert Client().get(url).status_code == 302  # to the login page
    response = staff.get(url)

    assert response.status_code == 200


def test_a_deployment_page_shows_its_breaker_state(staff: Client, demo: SimulatorHandle) -> None:
    response = staff.get(reverse("admin:routing_deployment_changelist"))

    assert b"closed" in response.content


def test_a_key_added_in_the_admin_is_shown_once_and_stored_hashed(staff: Client) -> None:
    response = staff.post(
        reverse("admin:routing_clientkey_add"),
        {"name": "transcripts", "environment": "staging", "scopes": ["chat", "usage:read"]},
    )

    assert response.status_code == 200
    raw = response.context["raw_key"]
    assert raw.startswith("sb-staging-") and raw.encode() in response.content
    key = ClientKey.objects.get()
    assert key.key_hash == hash_key(raw) and key.scopes == ["chat", "usage:read"]
    listing = staff.get(reverse("admin:routing_clientkey_changelist"))
    assert raw.encode() not in listing.content


def test_the_revoke_action_revokes(staff: Client, client_key: str) -> None:
    key = ClientKey.objects.get()

    staff.post(
        reverse("admin:routing_clientkey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )

    key.refresh_from_db()
    assert key.revoked_at is not None
