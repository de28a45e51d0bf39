"""The billing API a client key sees: its budgets' live spend and its savings."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
from django.test import Client

from billing.models import Budget
from tests.factories import drain_ledger, make_client_key

MESSAGES = [{"role": "user", "content": "Summarise: renewal signed for two years."}]


def get(path: str, key: str | None, **params: str) -> object:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return Client().get(path, params, **headers)


def test_budgets_show_live_spend_to_a_key_with_usage_read(
    openai_client: openai.OpenAI, client_key: str
) -> None:
    Budget.objects.create(scope="key", scope_ref="tests", amount_usd=Decimal("5"), hard=True)
    Budget.objects.create(scope="key", scope_ref="someone-else", amount_usd=Decimal("9"))
    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    response = get("/api/v1/budgets", client_key)

    assert response.status_code == 200  # type: ignore[attr-defined]
    budgets = {b["budget"]: b for b in response.json()["data"]}  # type: ignore[attr-defined]
    assert set(budgets) == {"global monthly", "key tests monthly"}
    mine = budgets["key tests monthly"]
    assert Decimal(mine["spent_usd"]) == Decimal(raw.headers["x-switchboard-cost-usd"])
    assert Decimal(mine["remaining_usd"]) == Decimal(5) - Decimal(mine["spent_usd"])


def test_savings_are_reported_for_the_calling_key(
    openai_client: openai.OpenAI, client_key: str
) -> None:
    openai_client.chat.completions.create(model="summary", messages=MESSAGES)
    drain_ledger()

    body = get("/api/v1/savings", client_key, group_by="provider").json()  # type: ignore[attr-defined]

    assert body["target_saving_pct"] == "70"
    assert body["data"][0]["bucket"] == "aimlapi"
    assert body["total"]["saving_pct"] == "60.00"


@pytest.mark.parametrize("path", ["/api/v1/budgets", "/api/v1/savings", "/api/v1/usage"])
def test_the_billing_api_needs_a_key_with_usage_read(client_key: str, path: str) -> None:
    chat_only = make_client_key(name="chat-only", scopes=["chat"])

    assert get(path, None).status_code in (401, 403)  # type: ignore[attr-defined]
    assert get(path, "sb-prod-unknown").status_code == 401  # type: ignore[attr-defined]
    refused = get(path, chat_only)
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert refused.json()["error"]["message"] == "This key lacks the 'usage:read' scope."  # type: ignore[attr-defined]
    assert get(path, client_key).status_code == 200  # type: ignore[attr-defined]


def test_a_bad_grouping_is_a_400_naming_the_field(client_key: str) -> None:
    response = get("/api/v1/savings", client_key, group_by="planet")

    assert response.status_code == 400  # type: ignore[attr-defined]
    assert "group_by" in response.json()["error"]["message"]  # type: ignore[attr-defined]
