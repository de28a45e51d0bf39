"""Actual against direct cost: priced independently, reported honestly."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client
from genai_prices import Usage, calc_price

from billing import reports
from billing.models import UsageRecord
from billing.money import quantize
from tests.factories import drain_ledger

MESSAGES = [{"role": "user", "content": "Summarise: the client asked for a discount on seats."}]
ANSWERED_BY = {
    "summary": ("aimlapi", "gpt-4o-mini"),
    "openai/gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "google/gemini-2.0-flash": ("google", "gemini-2.0-flash"),
    "anthropic/claude-3-5-haiku-latest": ("anthropic", "claude-3-5-haiku-latest"),
}
AIMLAPI_PRICES = (Decimal("0.06"), Decimal("0.24"))  # routing/demo/demo.yaml


def list_cost(vendor: str, model: str, record: UsageRecord) -> Decimal:
    usage = Usage(input_tokens=record.prompt_tokens, output_tokens=record.completion_tokens)
    return quantize(calc_price(usage, model_ref=model, provider_id=vendor).total_price)


@pytest.fixture
def traffic(openai_client: openai.OpenAI) -> list[UsageRecord]:
    for model in ANSWERED_BY:
        for _ in range(2):
            openai_client.chat.completions.create(model=model, messages=MESSAGES)
    drain_ledger()
    return list(UsageRecord.objects.all())


def test_each_record_costs_what_the_price_lists_say(traffic: list[UsageRecord]) -> None:
    assert len(traffic) == 8
    for record in traffic:
        vendor = "openai" if record.provider == "aimlapi" else record.provider
        direct = list_cost(vendor, record.model, record)
        if record.provider == "aimlapi":
            input_price, output_price = AIMLAPI_PRICES
            actual = quantize(
                (record.prompt_tokens * input_price + record.completion_tokens * output_price)
                / 1_000_000
            )
        else:
            actual = direct  # a direct call costs the list price
        assert record.cost_usd == actual, record
        assert record.direct_cost_usd == direct, record


def test_the_report_saving_is_direct_minus_actual_over_direct(traffic: list[UsageRecord]) -> None:
    actual = sum(r.cost_usd for r in traffic)
    direct = sum(r.direct_cost_usd or 0 for r in traffic)

    rows, total = reports.savings("provider")

    assert total.actual_usd == actual and total.direct_usd == direct
    assert total.saving_pct == ((direct - actual) / direct * 100).quantize(Decimal("0.01"))
    aimlapi = next(row for row in rows if row.bucket == "aimlapi")
    assert aimlapi.saving_pct == Decimal("60.00")  # 0.06/0.24 against gpt-4o-mini's 0.15/0.60
    assert aimlapi.meets_target is False
    assert next(row for row in rows if row.bucket == "openai").saving_pct == 0


def test_a_model_without_a_vendor_price_is_left_out_of_the_percentage(
    traffic: list[UsageRecord],
) -> None:
    before = reports.savings("route")[1]
    UsageRecord.objects.filter(pk=traffic[0].pk).update(direct_cost_usd=None)

    after = reports.savings("route")[1]

    assert after.unpriced_requests == 1
    assert after.direct_usd == before.direct_usd - traffic[0].direct_cost_usd
    assert after.actual_usd == before.actual_usd


def test_the_admin_page_and_csv_show_the_report_to_staff_only(
    traffic: list[UsageRecord],
) -> None:
    url = "/admin/billing/usagerecord/savings/"
    assert Client().get(url).status_code == 302
    staff = Client()
    staff.force_login(User.objects.create_superuser("finance", "f@example.com", "pw"))

    page = staff.get(url, {"group_by": "provider"})
    exported = staff.get(url, {"group_by": "provider", "format": "csv"})

    assert page.status_code == 200
    assert b"the 70% target" in page.content and b"aimlapi" in page.content
    rows = list(csv.reader(io.StringIO(exported.content.decode())))
    assert rows[0][:3] == ["provider", "requests", "actual_usd"]
    assert rows[-1][0] == "total" and rows[-1][1] == "8"
