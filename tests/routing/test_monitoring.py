"""The monitoring dashboard, the performance report and its CSV, and anomaly alerts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client, override_settings

from billing.models import UsageRecord
from project.jobs import deliver_alerts
from project.models import Alert, Channel
from routing import monitoring
from routing.jobs import check_anomalies
from tests.servers import WebhookReceiver

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ids = iter(range(1_000_000))


def call(provider: str, outcome: str = "ok", deployment_id: int = 1) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": "gpt-4o-mini",
        "deployment_id": deployment_id,
        "outcome": outcome,
        "status": 200 if outcome == "ok" else 503,
        "code": "",
        "message": "",
        "latency_ms": 10,
    }


def record(
    at: datetime,
    latency_ms: int = 100,
    provider: str = "openai",
    status: str = "ok",
    attempts: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> UsageRecord:
    if attempts is None:
        attempts = [call(provider)] if provider and status != "rejected" else []
    return UsageRecord.objects.create(
        request_id=f"req-{next(_ids)}",
        created=at,
        route="summary",
        provider=provider if status in ("ok", "partial") else "",
        model="gpt-4o-mini" if status in ("ok", "partial") else "",
        status=status,
        latency_ms=latency_ms,
        attempts=attempts,
        **fields,
    )


def known_period() -> None:
    """100 answers from openai at 1..100 ms, one after a fallback from aimlapi; a cache hit;
    two failed requests; one refused; yesterday's spend."""
    for ms in range(1, 101):
        attempts = [call("aimlapi", "transient", 7), call("openai")] if ms == 100 else None
        record(
            NOW - timedelta(minutes=30),
            latency_ms=ms,
            attempts=attempts,
            prompt_tokens=10,
            completion_tokens=5,
            cost_usd=Decimal("0.0001"),
        )
    record(NOW - timedelta(minutes=20), latency_ms=2, cache_hit=True, attempts=[])
    for _ in range(2):
        record(
            NOW - timedelta(minutes=10),
            provider="",
            status="error",
            attempts=[call("aimlapi", "transient", 7), call("aimlapi", "transient", 7)],
        )
    record(NOW - timedelta(minutes=5), provider="", status="rejected", attempts=[])
    record(NOW - timedelta(hours=20), latency_ms=5000, cost_usd=Decimal("0.5"))


def staff(permission_role: str = "Operator") -> Client:
    from django.contrib.auth.models import Group

    user, _ = User.objects.get_or_create(username=f"watcher-{permission_role}", is_staff=True)
    user.groups.add(Group.objects.get(name=permission_role))
    client = Client()
    client.force_login(user)
    return client


def test_percentiles_and_rates_come_out_of_known_records() -> None:
    known_period()

    report = monitoring.period_report(NOW - timedelta(hours=1), NOW)

    openai_row = next(r for r in report.providers if r.provider == "openai")
    assert (openai_row.p50, openai_row.p95, openai_row.p99) == (50, 95, 99)
    assert openai_row.answered == 101  # the cache hit is answered too, but has no latency
    assert openai_row.cost_usd == Decimal("0.0100")
    assert openai_row.prompt_tokens == 1000 and openai_row.completion_tokens == 500
    aimlapi = next(r for r in report.providers if r.provider == "aimlapi")
    assert (aimlapi.tally.calls, aimlapi.tally.failed_calls, aimlapi.tally.call_error_rate) == (
        5,
        5,
        100.0,
    )
    total = report.total
    assert total.requests == 104 and total.errors == 2 and total.refused == 1
    assert total.error_rate == round(100 * 2 / 104, 2)
    assert total.fallback_rate == round(100 * 1 / 102, 2)  # 100 answered + 2 failed tried
    assert total.cache_hit_ratio == round(100 * 1 / 103, 2)
    assert report.sampled_every == 1


@override_settings(SWITCHBOARD_MONITORING={"MAX_ROWS": 10})
def test_a_period_past_the_row_bound_is_read_as_an_even_sample() -> None:
    for ms in range(1, 101):
        record(NOW - timedelta(minutes=30), latency_ms=ms)

    report = monitoring.period_report(NOW - timedelta(hours=1), NOW)

    assert report.sampled_every == 10 and report.records == 100
    assert len(report.total.latencies) == 10
    assert report.providers[0].answered == 100  # counts are never sampled


def test_the_dashboard_shows_the_period_charts_and_live_breakers() -> None:
    known_period()

    with time_machine.travel(NOW, tick=False):
        response = staff().get("/admin/routing/monitoring/?period=1h")

    assert response.status_code == 200
    page = response.content.decode()
    assert "95 ms" in page and "99 ms" in page and "50 ms" in page
    chart = response.context["chart"]
    assert len(chart["labels"]) == 12  # 5-minute buckets
    assert chart["latency"][0]["provider"] == "openai"
    assert chart["latency"][0]["p95"][6] == 95  # all 100 answers fell 30 minutes ago
    assert chart["error_rate"][10] == 100.0  # the two failures, 10 minutes ago
    assert [d["day"] for d in chart["cost_per_day"]] == ["2026-11-20"]


def test_the_24_hour_period_has_yesterdays_spend_and_the_slow_answer() -> None:
    known_period()

    with time_machine.travel(NOW, tick=False):
        data = monitoring.dashboard("24h")

    assert data["report"].records == 105
    assert [d["day"] for d in data["chart"]["cost_per_day"]] == ["2026-11-19", "2026-11-20"]
    assert data["chart"]["cost_per_day"][0]["cost"] == "0.500000"


def test_the_report_exports_the_same_numbers_as_csv() -> None:
    known_period()

    response = staff("Finance").get(
        "/admin/routing/monitoring/report/?start=2026-11-20&end=2026-11-20&format=csv"
    )

    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:2] == ["from", "2026-11-20T00:00:00+00:00"]
    assert rows[1] == monitoring.CSV_HEADER
    by_provider = {row[0]: row for row in rows[2:] if row and row[0] in ("openai", "aimlapi")}
    assert by_provider["openai"][5:8] == ["50", "95", "99"]
    assert by_provider["openai"][10] == "0.0100000000"
    assert by_provider["aimlapi"][2:5] == ["5", "5", "100.0"]
    page = staff("Viewer").get("/admin/routing/monitoring/report/?start=2026-11-20&end=2026-11-20")
    assert page.status_code == 200 and "99 ms" in page.content.decode()


def test_a_report_that_ends_before_it_starts_says_so() -> None:
    response = staff().get("/admin/routing/monitoring/report/?start=2026-11-20&end=2026-11-01")

    assert "The period starts after it ends." in response.content.decode()


# -- anomalies ---------------------------------------------------------------------------


def traffic(window_ms: int, window_failures: int = 0) -> None:
    """A day of 200 ms answers from openai, then 30 in the last ten minutes."""
    for hour in range(1, 24):
        for _ in range(3):
            record(NOW - timedelta(minutes=15) - timedelta(hours=hour), latency_ms=200)
    for i in range(30):
        failed = i < window_failures
        record(
            NOW - timedelta(minutes=10),
            latency_ms=window_ms,
            provider="" if failed else "openai",
            status="error" if failed else "ok",
            attempts=[call("openai", "transient" if failed else "ok")],
        )


@pytest.fixture
def ops_hook(webhook: WebhookReceiver) -> WebhookReceiver:
    Channel.objects.create(kind="webhook", name="ops", target=webhook.url())
    return webhook


def test_a_latency_spike_alerts_once_and_reaches_the_webhook(ops_hook: WebhookReceiver) -> None:
    traffic(window_ms=3000)

    with time_machine.travel(NOW, tick=False):
        assert check_anomalies() == 1
        assert check_anomalies() == 0  # the same anomaly, still going on
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        assert check_anomalies() == 0
        deliver_alerts()

    alert = Alert.objects.get()
    assert alert.kind == "latency_anomaly" and alert.subject == "provider:openai"
    assert "3000 ms" in alert.title and "15.0x" in alert.title
    assert ops_hook.codes() == [str(alert.code)]


def test_an_error_rate_spike_alerts(ops_hook: WebhookReceiver) -> None:
    traffic(window_ms=200, window_failures=12)

    with time_machine.travel(NOW, tick=False):
        assert check_anomalies() == 1

    alert = Alert.objects.get()
    assert alert.kind == "error_rate_anomaly" and "40.0% of calls failing" in alert.title


def test_normal_traffic_raises_nothing(ops_hook: WebhookReceiver) -> None:
    traffic(window_ms=240, window_failures=1)

    with time_machine.travel(NOW, tick=False):
        assert check_anomalies() == 0

    assert not Alert.objects.exists()


def test_a_provider_back_to_normal_alerts_again_at_its_next_anomaly() -> None:
    traffic(window_ms=3000)
    with time_machine.travel(NOW, tick=False):
        assert check_anomalies() == 1
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        assert check_anomalies() == 0  # no traffic in the window: the episode is over
    for _ in range(30):
        record(NOW + timedelta(hours=2) - timedelta(minutes=5), latency_ms=9000)
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        assert check_anomalies() == 1

    assert Alert.objects.filter(kind="latency_anomaly").count() == 2
