"""Roles walk the admin: anonymous, wrong role, right role."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from project.roles import ROLES

pytestmark = pytest.mark.django_db

PAGES = {
    "providers": "/admin/routing/provider/",
    "client keys": "/admin/routing/clientkey/",
    "budgets": "/admin/billing/budget/",
    "spend dashboard": "/admin/billing/budget/dashboard/",
    "savings": "/admin/billing/usagerecord/savings/",
    "alert channels": "/admin/project/channel/",
    "content samples": "/admin/billing/contentsample/",
}
# Which role may open which page (view); every other role gets 403.
MAY_VIEW = {
    "Administrator": set(PAGES),
    "Operator": set(PAGES) - {"content samples"},
    "Finance": {"providers", "budgets", "spend dashboard", "savings", "alert channels"},
    "Stakeholder": {"budgets", "spend dashboard"},
    "Viewer": set(PAGES) - {"content samples"},
}


def member_of(role: str) -> Client:
    user = User.objects.create_user(
        role.lower(), f"{role.lower()}@example.com", "pw", is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_the_migration_created_the_five_roles() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)


@pytest.mark.parametrize("role", list(MAY_VIEW))
def test_each_role_sees_its_pages_and_no_others(role: str) -> None:
    client = member_of(role)
    for page, url in PAGES.items():
        expected = 200 if page in MAY_VIEW[role] else 403
        assert client.get(url).status_code == expected, (role, page)


@pytest.mark.parametrize("url", list(PAGES.values()))
def test_anonymous_is_sent_to_the_login_page(url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_viewer_cannot_change_what_it_sees() -> None:
    viewer = member_of("Viewer")
    assert viewer.get("/admin/routing/provider/add/").status_code == 403
    assert viewer.get("/admin/billing/budget/add/").status_code == 403


def test_only_administrators_hold_content_sample_and_erasure_permissions() -> None:
    for role in ROLES:
        codenames = set(Group.objects.get(name=role).permissions.values_list("codename", flat=True))
        private = {c for c in codenames if c.endswith("_contentsample") or c == "forget_end_user"}
        if role == "Administrator":
            assert private == {
                "add_contentsample",
                "change_contentsample",
                "delete_contentsample",
                "view_contentsample",
                "forget_end_user",
            }
        else:
            assert private == set(), role


def test_finance_edits_budgets_but_not_routes() -> None:
    finance = member_of("Finance")
    assert finance.get("/admin/billing/budget/add/").status_code == 200
    assert finance.get("/admin/routing/route/add/").status_code == 403
