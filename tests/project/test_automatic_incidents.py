"""Incidents opened for you: a provider going down, a hard budget exhausted, a key reported
compromised; and the periodic job that escalates them, run by a real RQ worker.

The provider is the real simulator made to fail, probed as the periodic job does;
the budget's spend is the real Redis counter the gateway keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import django_rq
import pytest
import time_machine
from django.contrib.auth.models import User
from django.utils import timezone
from redis import Redis
from rq import SimpleWorker

from billing import watch
from billing.budgets import to_units
from billing.models import Budget
from project.cron import PERIODIC_JOBS
from project.incidents import open_incident, resolve
from project.models import Alert, Incident, IncidentEvent
from routing.health import run_probes
from routing.models import ClientKey
from tests.factories import make_client_key
from tests.project.test_roles import member_of
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


@pytest.mark.django_db
def test_reporting_a_client_key_compromised_revokes_it_and_opens_its_incident() -> None:
    make_client_key("notes-service")
    key = ClientKey.objects.get()
    operator = member_of("Operator")

    response = operator.post(
        "/admin/routing/clientkey/",
        {"action": "report_compromised", "_selected_action": [key.pk]},
        follow=True,
    )

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None
    incident = Incident.objects.get()
    assert (incident.kind, incident.severity, incident.subject) == (
        "key_compromise",
        "critical",
        f"client_key:{key.code}",
    )
    assert incident.summary == "Reported by operator; revoked now."
    assert incident.runbook == "key_compromise"
    assert "its incident" in response.content.decode()
    assert "sb-" not in incident.summary, "the key's secret never goes near an incident"

    viewer = member_of("Viewer")
    viewer.post(
        "/admin/routing/clientkey/",
        {"action": "report_compromised", "_selected_action": [key.pk]},
    )
    assert Incident.objects.count() == 1, "a viewer cannot report (or revoke)"


@pytest.mark.django_db(transaction=True)  # django-rq enqueues when the transaction commits
def test_the_periodic_job_escalates_through_an_rq_worker(redis: Redis) -> None:
    assert ("project.jobs.escalate_incidents", 30) in PERIODIC_JOBS
    # Opened 15 minutes ago; the worker runs now (RQ keeps its own clock in Redis).
    with time_machine.travel(timezone.now() - timedelta(minutes=15, seconds=1), tick=False):
        incident, _ = open_incident("other", "manual:1", "Checkout is slow")
    queue = django_rq.get_queue("default")
    job = queue.enqueue("project.jobs.escalate_incidents")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)

    assert job.get_status() == "finished", job.latest_result()
    incident.refresh_from_db()
    assert incident.level == 2
