"""Budget alerts at 70/85/95%, real-time spend reconciled with the ledger, spend anomalies."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from redis import Redis

from billing import watch
from billing.budgets import current_spend, to_units
from billing.models import Budget, UsageRecord
from project.jobs import deliver_alerts
from project.models import Alert, Channel

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def budget(amount: str = "100", **fields: object) -> Budget:
    return Budget.objects.create(
        scope="global",
        period="monthly",
        amount_usd=Decimal(amount),
        hard=True,
        alert_at=[70, 85, 95],
        **fields,
    )


def spend(redis: Redis, budget: Budget, amount: str) -> None:
    redis.hincrby(budget.info().key(NOW), "spent", to_units(Decimal(amount)))


def test_each_threshold_alerts_once_per_period_as_spend_climbs(redis: Redis) -> None:
    global_budget = budget()
    Channel.objects.create(kind="email", name="finance", target="finance@example.com")

    spend(redis, global_budget, "71")
    assert [c.threshold for c in watch.check_thresholds(redis, NOW)] == [70]
    assert watch.check_thresholds(redis, NOW) == []
    spend(redis, global_budget, "25")  # 96%
    assert [c.threshold for c in watch.check_thresholds(redis, NOW)] == [85, 95]

    assert Alert.objects.filter(kind="budget_threshold").count() == 3
    deliver_alerts()
    assert len(mail.outbox) == 3
    assert "96.0% used" in mail.outbox[-1].subject + mail.outbox[-1].body


def test_two_workers_checking_at_once_raise_each_alert_once(redis: Redis) -> None:
    global_budget = budget()
    spend(redis, global_budget, "90")

    def check() -> None:
        try:
            watch.check_thresholds(redis, NOW)
        finally:
            connection.close()  # this thread's own connection

    workers = [threading.Thread(target=check) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(Alert.objects.values_list("threshold", flat=True)) == ["70", "85"]


def test_a_new_period_alerts_again(redis: Redis) -> None:
    global_budget = budget()
    spend(redis, global_budget, "75")
    watch.check_thresholds(redis, NOW)
    next_month = NOW + timedelta(days=15)
    redis.hincrby(global_budget.info().key(next_month), "spent", to_units(Decimal("75")))

    watch.check_thresholds(redis, next_month)

    assert sorted(Alert.objects.values_list("period", flat=True)) == ["2026-11", "2026-12"]


def test_reconcile_restores_spend_redis_lost_from_the_ledger(redis: Redis) -> None:
    global_budget = budget()
    UsageRecord.objects.create(
        request_id="r1", created=NOW - timedelta(days=1), status="ok", cost_usd=Decimal("12.5")
    )
    UsageRecord.objects.create(
        request_id="r2", created=NOW - timedelta(days=40), status="ok", cost_usd=Decimal("99")
    )

    corrections = watch.reconcile(redis, NOW)

    assert corrections == {global_budget.pk: Decimal("12.5")}
    assert current_spend(redis, global_budget.info(), NOW)[0] == Decimal("12.5")
    assert watch.reconcile(redis, NOW) == {}, "never lowered, never added twice"


def test_an_hour_far_above_its_baseline_raises_a_spend_anomaly() -> None:
    for hour in range(1, 24 * 7):
        UsageRecord.objects.create(
            request_id=f"h{hour}",
            created=NOW - timedelta(hours=hour, minutes=30),
            status="ok",
            cost_usd=Decimal("0.50"),
        )
    UsageRecord.objects.create(
        request_id="spike",
        created=NOW - timedelta(minutes=10),
        status="ok",
        cost_usd=Decimal("6"),
    )

    assert watch.check_anomaly(NOW) is True
    assert watch.check_anomaly(NOW) is False, "once per hour"
    assert Alert.objects.get().kind == "spend_anomaly"


def test_a_budget_projected_to_overrun_alerts_once_per_period() -> None:
    budget("1000")
    for day in range(1, 20):
        UsageRecord.objects.create(
            request_id=f"d{day}",
            created=datetime(2026, 11, day, 10, tzinfo=UTC),
            status="ok",
            cost_usd=Decimal("45"),
        )

    assert len(watch.check_forecasts(NOW)) == 1  # ~$1,350 by the 30th
    assert watch.check_forecasts(NOW) == []
    alert = Alert.objects.get(kind="budget_forecast")
    assert "projected to reach" in alert.title and alert.threshold == "projected_overrun"


def test_a_budget_on_track_raises_no_forecast_alert() -> None:
    budget("5000")
    UsageRecord.objects.create(
        request_id="small", created=NOW - timedelta(days=2), status="ok", cost_usd=Decimal("20")
    )

    assert watch.check_forecasts(NOW) == []


def test_a_new_budget_alerts_at_70_85_and_95_percent_unless_told_otherwise() -> None:
    assert Budget.objects.create(scope="global", amount_usd=Decimal("1")).alert_at == [70, 85, 95]
