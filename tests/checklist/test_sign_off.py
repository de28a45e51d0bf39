"""Sign-offs: only a role's holder signs it, with a comment and an evidence snapshot;
revoking needs a reason; all eight signed completes the checklist; everything audited."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import PermissionDenied, ValidationError

from checklist.actions import revoke_sign_off, sign_off
from checklist.models import Checklist, Item, SignOff, SignOffRole
from tests.checklist.factories import make_checklist, make_member

pytestmark = pytest.mark.django_db

ROLES = [
    "Engineering Lead", "DevOps Lead", "QA Lead", "Security Lead", "Product Manager",
    "Finance Lead", "Operations Lead", "Executive Sponsor",
]  # fmt: skip


def role(name: str) -> SignOffRole:
    return SignOffRole.objects.get(name=name)


def test_a_holder_signs_their_role_with_a_comment_and_the_evidence_of_the_moment() -> None:
    make_checklist()
    qa = make_member("quinn", holds=("QA Lead",))

    signed = sign_off(role("QA Lead"), qa, "Suite green, drill passed.")

    assert (signed.user_name, signed.comment) == ("quinn", "Suite green, drill passed.")
    assert signed.evidence["circuit_breakers"]["status"] == "pass"
    assert signed.evidence["satisfaction"]["status"] == "unknown"
    line = Item.objects.get(title="QA Lead")
    assert line.status == Item.Status.DONE
    assert line.events.get().comment == "Signed off: Suite green, drill passed."
    entry = LogEntry.objects.get_for_object(signed).get()
    assert entry.action == LogEntry.Action.CREATE and "evidence" not in entry.changes_dict


def test_nobody_signs_a_role_they_do_not_hold_and_a_viewer_signs_nothing() -> None:
    make_checklist()
    qa = make_member("quinn", holds=("QA Lead",))
    viewer = make_member("vera", role="Viewer", holds=("Finance Lead",))

    with pytest.raises(PermissionDenied):
        sign_off(role("Security Lead"), qa, "Looks fine to me.")
    with pytest.raises(PermissionDenied):
        sign_off(role("Finance Lead"), viewer, "Numbers add up.")
    with pytest.raises(ValidationError):
        sign_off(role("QA Lead"), qa, "   ")
    assert not SignOff.objects.exists()


def test_a_role_is_signed_once_until_revoked_with_a_reason() -> None:
    make_checklist()
    qa = make_member("quinn", holds=("QA Lead",))
    other = make_member("oscar", holds=("QA Lead",))
    first = sign_off(role("QA Lead"), qa, "Suite green.")

    with pytest.raises(ValidationError, match="already signed off"):
        sign_off(role("QA Lead"), other, "Me too.")
    with pytest.raises(PermissionDenied):
        revoke_sign_off(first, other, "Not theirs to revoke.")
    with pytest.raises(ValidationError):
        revoke_sign_off(first, qa, "")

    revoked = revoke_sign_off(first, qa, "Found a flaky test.")

    assert revoked.revoke_reason == "Found a flaky test." and revoked.revoked_by_name == "quinn"
    assert Item.objects.get(title="QA Lead").status == Item.Status.IN_PROGRESS
    entries = LogEntry.objects.get_for_object(revoked).order_by("timestamp")
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    again = sign_off(role("QA Lead"), other, "Flaky test fixed; green three times.")
    assert again.is_active and SignOff.objects.count() == 2


def test_the_checklist_is_complete_when_all_eight_roles_have_signed() -> None:
    checklist = make_checklist()
    people = {name: make_member(f"user{i}", holds=(name,)) for i, name in enumerate(ROLES)}

    for name in ROLES[:-1]:
        sign_off(role(name), people[name], f"{name}: done.")
        assert not Checklist.objects.get().is_complete
    last = sign_off(role("Executive Sponsor"), people["Executive Sponsor"], "Go.")

    checklist.refresh_from_db()
    assert checklist.is_complete and checklist.completed_at is not None
    revoke_sign_off(last, people["Executive Sponsor"], "Board asked for a week.")
    checklist.refresh_from_db()
    assert not checklist.is_complete
