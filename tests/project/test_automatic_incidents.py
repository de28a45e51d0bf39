"""Incidents nobody has to open: a provider going down, a hard budget exhausted.

The provider is the real simulator made to fail, probed as the periodic job does;
the budget's spend is the real Redis counter the gateway keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from redis import Redis

from billing import watch
from billing.budgets import to_units
from billing.models import Budget
from project.incidents import resolve
from project.models import Alert, Incident, IncidentEvent
from routing.health import run_probes
from tests.servers import SimulatorHandle

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_a_provider_going_down_opens_one_outage_incident_and_its_recovery_is_noted(
    demo: SimulatorHandle,
) -> None:
    demo.fault(provider="openai", mode="error", status=503)
    for _ in range(5):
        run_probes()

    incident = Incident.objects.get()
    assert (incident.kind, incident.subject) == ("provider_outage", "provider:openai")
    assert incident.title == "openai/gpt-4o-mini is down"
    assert incident.level == 1
    assert Alert.objects.filter(kind="incident", subject=f"incident:{incident.pk}").count() == 1
    assert incident.runbook == "provider_outage"

    demo.clear()
    for _ in range(2):
        run_probes()

    incident.refresh_from_db()
    assert incident.status == Incident.Status.OPEN, "back up is not resolved: that needs a cause"
    note = incident.events.get(kind=IncidentEvent.Kind.NOTE)
    assert "answers its health probes again" in note.text


def hard_budget(amount: str = "100", *, hard: bool = True) -> Budget:
    return Budget.objects.create(
        scope="global", period="monthly", amount_usd=Decimal(amount), hard=hard
    )


def spend(redis: Redis, budget: Budget, amount: str) -> None:
    redis.hincrby(budget.info().key(NOW), "spent", to_units(Decimal(amount)))


@pytest.mark.django_db
def test_a_hard_budget_exhausted_opens_one_incident_for_the_period(redis: Redis) -> None:
    budget = hard_budget()
    spend(redis, budget, "99.99")
    watch.check_thresholds(redis, NOW)
    assert not Incident.objects.exists(), "not before the whole amount is spent"

    spend(redis, budget, "0.01")
    for _ in range(3):  # the job runs every 30 s
        watch.check_thresholds(redis, NOW)

    incident = Incident.objects.get()
    assert (incident.kind, incident.severity) == ("budget_exceeded", "critical")
    assert incident.subject == f"budget:{budget.pk}:2026-11"
    assert incident.title == "The global monthly budget is exhausted ($100.00 of $100.00)"
    assert not incident.events.filter(kind=IncidentEvent.Kind.TRIGGER).exists()

    resolve(incident, User.objects.create_user("fin"), "A batch job ran twice; budget raised.")
    watch.check_thresholds(redis, NOW)
    assert Incident.objects.count() == 1, "resolved for this period: not reopened"


@pytest.mark.django_db
def test_a_soft_budget_over_its_amount_opens_no_incident(redis: Redis) -> None:
    budget = hard_budget(hard=False)
    spend(redis, budget, "150")
    watch.check_thresholds(redis, NOW)
    assert not Incident.objects.exists()
