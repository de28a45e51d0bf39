from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from checklist.models import Checklist, EvidenceResult, Item, SignOffRole

pytestmark = pytest.mark.django_db


def test_the_demo_loads_the_customers_checklist_with_people_to_sign_in_as() -> None:
    out = StringIO()
    call_command("load_demo_checklist", stdout=out)
    call_command("load_demo_checklist", stdout=out)  # twice: nothing doubles

    checklist = Checklist.objects.get()
    assert checklist.start_date is not None
    assert Item.objects.count() == 202 and SignOffRole.objects.count() == 8
    assert set(
        SignOffRole.objects.get(name="QA Lead").users.values_list("username", flat=True)
    ) == {"stakeholder"}
    assert User.objects.get(username="viewer").check_password("viewer")
    assert EvidenceResult.objects.filter(key="circuit_breakers").exists()
