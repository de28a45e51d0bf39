"""The spend dashboard: budget viewers only, drawn with our own copy of Chart.js."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.contrib.staticfiles import finders
from django.test import Client

from billing.models import Budget, UsageRecord

URL = "/admin/billing/budget/dashboard/"
NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)
SCRIPT = "/static/billing/vendor/chart.umd.min.js"

pytestmark = pytest.mark.django_db


def staff(*permissions: str) -> Client:
    name = "-".join(("staff", *permissions))
    user = User.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


def spend_data(content: bytes) -> Any:
    found = re.search(rb'<script id="spend-data" type="application/json">(.*?)</script>', content)
    assert found, "the page embeds its chart data"
    return json.loads(found.group(1))


@pytest.fixture
def month() -> None:
    Budget.objects.create(scope="global", period="monthly", amount_usd=Decimal(5000), hard=True)
    for day in range(1, 20):
        for provider, model, cost, direct in [
            ("aimlapi", "gpt-4o-mini", "40", "100"),
            ("anthropic", "claude-3-5-haiku-latest", "10", "10"),
        ]:
            UsageRecord.objects.create(
                request_id=f"{provider}-{day}",
                created=datetime(2026, 3, day, 9, tzinfo=UTC),
                provider=provider,
                model=model,
                cost_usd=Decimal(cost),
                direct_cost_usd=Decimal(direct),
                status="ok",
            )


def test_anonymous_visitors_are_sent_to_log_in_and_staff_need_to_view_budgets() -> None:
    anonymous = Client().get(URL)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")

    assert staff("view_usagerecord").get(URL).status_code == 403
    assert staff("view_budget").get(URL).status_code == 200


def test_the_dashboard_charts_this_month_against_the_budget(month: None) -> None:
    with time_machine.travel(NOW, tick=False):
        page = staff("view_budget").get(URL)

    assert page.status_code == 200
    data = spend_data(page.content)
    assert data["budget_usd"] == "5000.0000"
    assert len(data["month"]["labels"]) == 31
    assert data["month"]["cumulative_actual"][18] == "950.0000"  # 19 days of $50
    assert data["month"]["cumulative_actual"][20] is None  # tomorrow has no actual spend
    assert Decimal(data["month"]["cumulative_projected"][-1]) > Decimal(950)
    assert data["by_provider"] == {
        "labels": ["aimlapi", "anthropic"],
        "spent": ["760.0000", "190.0000"],
    }
    assert data["by_model"]["labels"][0] == "aimlapi/gpt-4o-mini"
    savings = dict(zip(data["savings"]["labels"], data["savings"]["direct"], strict=True))
    assert savings["2026-03-19"] == "110.0000"
    assert b"spent <strong>$950.00</strong>" in page.content
    assert b"within budget" in page.content


def test_the_chart_library_is_served_from_our_static_files_not_a_cdn() -> None:
    page = staff("view_budget").get(URL)

    assert SCRIPT.encode() in page.content
    assert finders.find("billing/vendor/chart.umd.min.js")
    assert finders.find("billing/vendor/chart.js.LICENSE.md")
    assert not re.search(rb'(src|href)="(https?:)?//', page.content)
    assert b"cdn" not in page.content.lower()


def test_the_budget_list_and_the_savings_page_link_to_the_dashboard() -> None:
    client = staff("view_budget", "view_usagerecord")

    budgets = client.get("/admin/billing/budget/")
    savings = client.get("/admin/billing/usagerecord/savings/")

    assert f'href="{URL}"'.encode() in budgets.content
    assert f'href="{URL}"'.encode() in savings.content


def test_a_month_without_a_budget_still_draws_its_spend(month: None) -> None:
    Budget.objects.all().delete()
    UsageRecord.objects.filter(created__lt=NOW - timedelta(days=3)).delete()

    with time_machine.travel(NOW, tick=False):
        page = staff("view_budget").get(URL)

    assert page.status_code == 200
    assert b"no global monthly budget" in page.content
    assert spend_data(page.content)["month"]["budget_pace"] == []
