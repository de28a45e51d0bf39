"""Plain helpers that make deterministic checklist data."""

from __future__ import annotations

from checklist.actions import import_checklist
from checklist.data import CUSTOMER_CHECKLIST
from checklist.models import Checklist


def make_checklist() -> Checklist:
    """The customer's checklist, imported."""
    return import_checklist(CUSTOMER_CHECKLIST.read_text()).checklist


def seed_checklist() -> None:
    """One row of every checklist model the admin shows (tests/project/test_roles.py)."""
    from checklist.actions import evaluate_evidence
    from checklist.models import FallbackDrill, SignOff, SignOffRole

    make_checklist()
    evaluate_evidence(keys=["circuit_breakers"])
    FallbackDrill.objects.create()
    SignOff.objects.create(role=SignOffRole.objects.first(), user_name="qa", comment="ok")


def make_member(username: str, role: str = "Stakeholder", holds: tuple[str, ...] = ()) -> object:
    """A user in a permission role (project/roles.py) holding the named sign-off roles."""
    from django.contrib.auth.models import Group, User

    from checklist.models import SignOffRole

    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    user.groups.add(Group.objects.get(name=role))
    for name in holds:
        SignOffRole.objects.get(name=name).users.add(user)
    return User.objects.get(pk=user.pk)  # fresh: no cached permissions
