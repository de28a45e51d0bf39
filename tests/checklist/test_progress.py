"""Due dates from the programme start, status changes with their history, owners."""

from __future__ import annotations

from datetime import date

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.test import Client

from checklist.actions import assign_owner, change_item, set_start_date
from checklist.models import Item, ItemEvent, SignOffRole
from tests.checklist.factories import make_checklist

pytestmark = pytest.mark.django_db


def item(title: str) -> Item:
    return Item.objects.get(title=title)


def test_the_start_date_turns_days_and_weeks_into_due_dates() -> None:
    checklist = make_checklist()
    assert item("Implement EnhancedHybridAIClient class").due_on is None

    set_start_date(checklist, date(2026, 12, 1))

    # "Day 1-2": due on day 2; "Day 25-26": day 26.
    assert item("Implement EnhancedHybridAIClient class").due_on == date(2026, 12, 2)
    assert item("Complete migration to AIMLAPI").due_on == date(2026, 12, 26)
    # "Pre-Implementation Setup": before day 1.
    assert item("Create AIMLAPI Enterprise Account").due_on == date(2026, 11, 30)
    # "Post-Implementation (Week 5+)" is ongoing, and the criteria name no days.
    assert item("Daily Monitoring Tasks").due_on is None
    assert item("Cost Savings Achieved").due_on is None

    set_start_date(checklist, date(2027, 1, 4))
    assert item("Implement EnhancedHybridAIClient class").due_on == date(2027, 1, 5)


def test_a_status_change_records_who_when_from_and_to_with_the_comment() -> None:
    make_checklist()
    alice = User.objects.create_user("alice")
    target = item("Implement EnhancedHybridAIClient class")

    change_item(target, alice, status=Item.Status.IN_PROGRESS)
    change_item(target, alice, status=Item.Status.DONE, comment="Merged in #12.")
    change_item(target, alice, comment="Reviewed by QA too.")

    target.refresh_from_db()
    assert target.status == Item.Status.DONE
    events = list(target.events.order_by("created", "id"))
    assert [(e.kind, e.from_status, e.to_status, e.comment) for e in events] == [
        ("status", "todo", "in_progress", ""),
        ("status", "in_progress", "done", "Merged in #12."),
        ("comment", "done", "done", "Reviewed by QA too."),
    ]
    assert {e.user_name for e in events} == {"alice"}


def test_nothing_to_record_records_nothing_and_a_bad_status_is_refused() -> None:
    make_checklist()
    target = item("Implement EnhancedHybridAIClient class")

    assert change_item(target, None, status=Item.Status.TODO, comment="  ") is None
    with pytest.raises(ValidationError):
        change_item(target, None, status="finished")
    assert not ItemEvent.objects.exists()


def test_an_item_is_owned_by_a_user_or_a_role_and_mine_includes_my_roles() -> None:
    make_checklist()
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    devops = SignOffRole.objects.get(name="DevOps Lead")
    devops.users.add(bob)
    first, second = item("Implement EnhancedHybridAIClient class"), item("Rollback procedures")

    assign_owner(first, alice, owner=alice)
    assign_owner(second, alice, role=devops)

    assert list(Item.objects.owned_by(alice)) == [first]
    # The role also owns its own sign-off line.
    assert list(Item.objects.owned_by(bob)) == [second, item("DevOps Lead")]
    assert second.events.get().comment == "Owner: nobody → DevOps Lead"
    with pytest.raises(ValidationError):
        assign_owner(first, alice, owner=alice, role=devops)


def test_overdue_is_open_items_due_before_today() -> None:
    checklist = make_checklist()
    set_start_date(checklist, date(2026, 11, 1))
    done = item("Implement EnhancedHybridAIClient class")
    change_item(done, None, status=Item.Status.DONE)

    overdue = Item.objects.active().overdue(date(2026, 11, 3))

    # Days 1-2 and the pre-implementation items are due by 2 November.
    assert done not in overdue
    assert item("Configure AIMLAPI base endpoints and authentication") in overdue
    assert item("Create AIMLAPI Enterprise Account") in overdue
    assert item("Multi-Provider Architecture") not in overdue  # days 3-4


def test_a_status_changed_in_the_admin_leaves_a_history_row() -> None:
    make_checklist()
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    target = item("Implement EnhancedHybridAIClient class")

    response = client.post(
        f"/admin/checklist/item/{target.pk}/change/",
        {"status": "blocked", "owner": "", "owner_role": "", "events-TOTAL_FORMS": "0",
         "events-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 302
    event = target.events.get()
    assert (event.user_name, event.from_status, event.to_status) == ("root", "todo", "blocked")


def test_the_stakeholder_role_changes_items_but_cannot_hand_itself_a_sign_off_role() -> None:
    stakeholder = Group.objects.get(name="Stakeholder")
    codenames = set(stakeholder.permissions.values_list("codename", flat=True))
    assert "change_item" in codenames
    assert "change_signoffrole" not in codenames and "view_signoffrole" in codenames
