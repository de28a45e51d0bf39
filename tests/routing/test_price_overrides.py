"""An admin's price override wins from its effective date on."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import time_machine
from django.utils import timezone

from billing.models import UsageRecord
from routing.client import EnhancedHybridAIClient
from routing.models import Deployment, PriceOverride
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "List the action items."}]


def cost_of_one_call() -> tuple[Decimal, UsageRecord]:
    EnhancedHybridAIClient().complete(model="aimlapi/gpt-4o-mini", messages=MESSAGES)
    drain_ledger()
    record = UsageRecord.objects.latest("created")
    return record.cost_usd, record


def per_mtok(record: UsageRecord, input_price: str, output_price: str) -> Decimal:
    total = record.prompt_tokens * Decimal(input_price) + record.completion_tokens * Decimal(
        output_price
    )
    return (total / 1_000_000).quantize(Decimal("1e-10"))


def test_an_override_in_effect_sets_the_price(demo: SimulatorHandle) -> None:
    deployment = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    PriceOverride.objects.create(
        deployment=deployment,
        effective_from=timezone.now() - timedelta(days=1),
        input_usd_per_mtok=Decimal("0.05"),
        output_usd_per_mtok=Decimal("0.20"),
        note="negotiated volume rate",
    )

    cost, record = cost_of_one_call()

    assert cost == per_mtok(record, "0.05", "0.20")


def test_a_future_override_waits_for_its_date(demo: SimulatorHandle) -> None:
    deployment = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    starts = timezone.now() + timedelta(hours=1)
    PriceOverride.objects.create(
        deployment=deployment,
        effective_from=starts,
        input_usd_per_mtok=Decimal("0.03"),
        output_usd_per_mtok=Decimal("0.12"),
    )

    before, record = cost_of_one_call()
    assert before == per_mtok(record, "0.06", "0.24")

    with time_machine.travel(starts + timedelta(minutes=1), tick=True):
        after, record = cost_of_one_call()

    assert after == per_mtok(record, "0.03", "0.12")
