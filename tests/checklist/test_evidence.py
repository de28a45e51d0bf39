"""Each evidence check, passing and failing against the real rows it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import override_settings

from billing.models import Budget, UsageRecord
from checklist import evidence
from checklist.actions import evaluate_evidence, import_checklist
from checklist.data import CUSTOMER_CHECKLIST
from checklist.models import EvidenceResult, FallbackDrill, Item
from project.alerts import raise_alert
from project.cron import PERIODIC_JOBS
from project.models import Channel, DeliveryAttempt
from routing.breaker import KEY as BREAKER_KEY
from routing.models import ClientKey, Deployment, ProbeResult, Provider, ProviderCredential
from tests.factories import load_demo_config, make_client_key, make_provider

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 16, 12, tzinfo=UTC)


def measure(key: str, now: datetime = NOW) -> evidence.Measurement:
    return evidence.measure(key, now)


@pytest.fixture
def demo() -> None:
    """The demo's providers, routes and $5,000 budget (alerts at 70/85/95), no simulator."""
    load_demo_config("http://127.0.0.1:9")


def usage(n: int, latency_ms: int = 100, at: datetime = NOW, **fields: object) -> None:
    start = UsageRecord.objects.count()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"req-{start + i}",
            created=at,
            status="ok",
            latency_ms=latency_ms,
            provider="aimlapi",
            **fields,
        )
        for i in range(n)
    )


# -- billing alerts -----------------------------------------------------------------------


def test_billing_alerts_pass_with_the_three_thresholds_and_a_configured_channel(demo) -> None:
    Channel.objects.create(kind="email", name="finance", target="finance@example.com")

    result = measure("billing_alerts")

    assert result.status == "pass"
    assert (
        result.value == "alerts at 70/85/95% of $5,000; configured (finance), nothing delivered yet"
    )


def test_billing_alerts_pass_on_a_channel_that_delivered(demo) -> None:
    channel = Channel.objects.create(kind="email", name="finance", target="finance@example.com")
    alert, _ = raise_alert("budget_threshold", "budget:global:monthly", "70% spent")
    DeliveryAttempt.objects.create(alert=alert, channel=channel, channel_name="finance",
                                   attempt=1, ok=True)  # fmt: skip

    assert "last delivery ok on finance" in measure("billing_alerts").value


def test_billing_alerts_fail_without_every_threshold_or_a_working_channel(demo) -> None:
    assert measure("billing_alerts").detail == "no enabled channel receives budget alerts"

    channel = Channel.objects.create(kind="webhook", name="ops", target="https://hooks.example/x")
    alert, _ = raise_alert("budget_threshold", "budget:global:monthly", "70% spent")
    DeliveryAttempt.objects.create(alert=alert, channel=channel, channel_name="ops", attempt=1,
                                   ok=False, error="HTTP 500")  # fmt: skip
    failing = measure("billing_alerts")
    assert failing.status == "fail" and "last delivery failed" in failing.detail

    Channel.objects.create(kind="email", name="fin", target="f@example.com",
                           alert_kinds=["provider_down"])  # fmt: skip
    assert measure("billing_alerts").status == "fail", "that channel gets no budget alerts"

    Budget.objects.update(alert_at=[70, 85])
    assert measure("billing_alerts").detail == "no alert at 95% of the global budget"
    Budget.objects.all().delete()
    assert measure("billing_alerts").status == "fail"


# -- the fallback chain, breakers, providers ----------------------------------------------


def test_the_fallback_chain_passes_on_a_route_through_the_four_providers(demo) -> None:
    result = measure("fallback_chain")

    assert result.status == "pass"
    assert result.value == "route fallback-demo: aimlapi → openai → google → anthropic"


def test_the_fallback_chain_fails_without_a_provider_or_its_production_key(demo) -> None:
    ProviderCredential.objects.filter(provider__name="anthropic", environment="prod").delete()
    assert measure("fallback_chain").detail == "no production API key for anthropic"

    Provider.objects.filter(name="google").update(enabled=False)
    result = measure("fallback_chain")
    assert result.status == "fail" and result.value == "no such route"


def test_providers_are_healthy_while_every_breaker_is_closed(demo, redis) -> None:  # type: ignore[no-untyped-def]
    result = measure("providers_healthy")
    assert result.status == "pass"
    assert result.value == "aimlapi closed, openai closed, google closed, anthropic closed"

    openai = Deployment.objects.get(provider__name="openai")
    redis.hset(BREAKER_KEY.format(openai.pk), mapping={"state": "open", "opened_at": 1})

    result = measure("providers_healthy")
    assert result.status == "fail"
    assert result.value == "aimlapi closed, openai open, google closed, anthropic closed"


def test_providers_healthy_fails_without_a_chain() -> None:
    assert measure("providers_healthy").status == "fail"


def test_circuit_breakers_pass_as_configured_and_fail_when_switched_off() -> None:
    result = measure("circuit_breakers")
    assert result.status == "pass"
    assert result.value.startswith("open after 5 consecutive failures or 50% of ≥20 calls")

    with override_settings(SWITCHBOARD={**settings.SWITCHBOARD, "BREAKER_CONSECUTIVE_FAILURES": 0}):
        result = measure("circuit_breakers")
    assert result.status == "fail" and "BREAKER_FAILURES" in result.detail


# -- the ledger ---------------------------------------------------------------------------


def test_response_time_p95_reads_the_last_24_hours_of_answered_requests() -> None:
    assert measure("response_time_p95").status == "unknown"

    usage(96, latency_ms=120)
    usage(4, latency_ms=900)
    usage(50, latency_ms=5000, at=NOW - timedelta(hours=25))  # older than a day
    usage(50, latency_ms=45000, context={evidence.DRILL_METADATA_KEY: "timeout"})
    result = measure("response_time_p95")
    assert (result.status, result.value) == ("pass", "p95 120 ms over 100 requests")

    usage(2, latency_ms=900)
    result = measure("response_time_p95")
    assert (result.status, result.value) == ("fail", "p95 900 ms over 102 requests")


def test_cost_saving_is_the_ledgers_saving_against_direct_prices() -> None:
    assert measure("cost_saving").status == "unknown"

    usage(10, at=NOW - timedelta(days=1), cost_usd=Decimal("0.20"), direct_cost_usd=Decimal(1))
    result = measure("cost_saving")
    assert result.status == "pass" and result.value.startswith("80.00% over 30 days")

    usage(10, at=NOW - timedelta(days=2), cost_usd=Decimal("0.80"), direct_cost_usd=Decimal(1))
    result = measure("cost_saving")
    assert result.status == "fail" and result.value.startswith("50.00% over 30 days")


def test_monthly_spend_passes_under_5000_and_fails_when_the_forecast_overruns() -> None:
    assert measure("monthly_spend").status == "unknown"

    for day in range(1, 16):
        usage(1, at=datetime(2026, 11, day, 9, tzinfo=UTC), cost_usd=Decimal(100))
    result = measure("monthly_spend")
    assert result.status == "pass"
    assert result.value.startswith("$1,500.00 spent this month, $2,950.00 projected")

    for day in range(1, 16):
        usage(1, at=datetime(2026, 11, day, 10, tzinfo=UTC), cost_usd=Decimal(150))
    result = measure("monthly_spend")
    assert result.status == "fail" and "projected to end over" in result.detail


# -- keys -----------------------------------------------------------------------------------


def test_keys_pass_when_stored_encrypted_and_none_is_overdue(demo) -> None:
    make_provider("acme")

    result = measure("keys_encrypted")

    assert result.status == "pass"
    assert (
        result.value
        == "13 keys: 1 stored encrypted, 12 from environment variables; 0 overdue for rotation"
    )


def test_keys_fail_on_a_plaintext_key_or_one_overdue_for_rotation(demo) -> None:
    acme = make_provider("acme").credentials.get()
    ProviderCredential.objects.filter(pk=acme.pk).update(secret_encrypted="sk-acme-in-the-clear")
    result = measure("keys_encrypted")
    assert result.status == "fail" and result.detail == "not an encrypted token: acme prod"

    acme.delete()
    ProviderCredential.objects.filter(provider__name="openai", environment="prod").update(
        rotated_at=NOW - timedelta(days=31)
    )
    result = measure("keys_encrypted")
    assert result.status == "fail" and result.detail == "overdue for rotation: openai prod"


# -- the drill, and the checks whose data is still to come ---------------------------------


def test_fallback_scenarios_follow_the_last_finished_drill() -> None:
    assert measure("fallback_drill").status == "unknown"

    FallbackDrill.objects.create(status="passed", finished_at=NOW - timedelta(days=2),
                                 scenarios=[{"ok": True}, {"ok": True}])  # fmt: skip
    result = measure("fallback_drill")
    assert result.status == "pass" and result.value.startswith("2 of 2 scenarios passed")
    assert result.measured_at == NOW - timedelta(days=2)

    FallbackDrill.objects.create(status="failed", finished_at=NOW - timedelta(days=1),
                                 scenarios=[{"ok": True}, {"ok": False}])  # fmt: skip
    FallbackDrill.objects.create(status="running")  # not finished: not evidence yet
    assert measure("fallback_drill").status == "fail"


def feedback(positive: int, negative: int, at: datetime = NOW - timedelta(days=1)) -> None:
    from routing.models import Feedback

    start = Feedback.objects.count()
    Feedback.objects.bulk_create(
        Feedback(request_id=f"req-{start + i}", kind="stars", rating=5 if i < positive else 2,
                 positive=i < positive, created=at, updated=at)
        for i in range(positive + negative)
    )  # fmt: skip


def test_satisfaction_is_unknown_until_enough_feedback_is_collected() -> None:
    assert measure("satisfaction").detail.startswith("0 rating(s) in 30 days")

    feedback(9, 0)
    result = measure("satisfaction")

    assert result.status == "unknown" and result.value == ""
    assert result.detail.startswith("9 rating(s) in 30 days; at least 10 are needed")


def test_satisfaction_passes_at_90_percent_positive_over_30_days() -> None:
    feedback(19, 1)
    feedback(0, 30, at=NOW - timedelta(days=31))  # before the window

    result = measure("satisfaction")

    assert result.status == "pass"
    assert result.value == "95.0% positive of 20 ratings over 30 days (19 positive)"
    assert result.threshold == "≥ 90% positive feedback"


def test_satisfaction_fails_below_90_percent() -> None:
    feedback(17, 3)

    result = measure("satisfaction")

    assert result.status == "fail"
    assert result.value.startswith("85.0% positive of 20 ratings")
    assert result.detail == "below the 90% target"


def probe(deployment: Deployment, minute: int, ok: bool) -> None:
    ProbeResult.objects.create(
        deployment=deployment, ok=ok, latency_ms=80, created=NOW - timedelta(minutes=minute)
    )


def test_uptime_counts_minutes_with_a_healthy_provider_in_the_chain(demo) -> None:
    assert measure("uptime").status == "unknown"
    _, chain = evidence.plan_route()
    aimlapi, openai = chain[0], chain[1]

    for minute in range(1, 101):
        probe(aimlapi, minute, ok=minute != 50)  # aimlapi down one minute...
    probe(openai, 50, ok=True)  # ...while openai answered: the system was up
    result = measure("uptime")
    assert (result.status, result.value) == ("pass", "100.000% (100 of 100 probed minutes up)")

    # Minute 20: aimlapi and openai both failed their probes.
    ProbeResult.objects.filter(deployment=aimlapi, created=NOW - timedelta(minutes=20)).update(
        ok=False
    )
    probe(openai, 20, ok=False)
    result = measure("uptime")
    assert (result.status, result.value) == ("fail", "99.000% (99 of 100 probed minutes up)")


def test_rate_limits_pass_when_every_active_key_is_limited() -> None:
    assert measure("rate_limits").status == "unknown"
    make_client_key("notes")
    make_client_key("search")
    result = measure("rate_limits")
    assert result.status == "fail" and result.detail.endswith(": notes, search")

    ClientKey.objects.filter(name="notes").update(rpm=600)
    ClientKey.objects.filter(name="search").update(max_concurrent=20)
    result = measure("rate_limits")
    assert (result.status, result.value) == ("pass", "2 of 2 active keys limited")


def test_a_check_that_raises_is_unknown_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(now: datetime) -> evidence.Measurement:
        raise RuntimeError("redis is down")

    uptime = evidence.REGISTRY["uptime"]
    monkeypatch.setitem(evidence.REGISTRY, "uptime", evidence.Check("uptime", "", "", broken))
    result = measure("uptime")
    assert result.status == "unknown" and "redis is down" in result.detail
    assert uptime.key == "uptime"


# -- evaluation, history, bindings ----------------------------------------------------------


def test_every_evaluation_keeps_a_result_per_check_as_history(demo) -> None:
    evaluate_evidence(now=NOW - timedelta(minutes=10))
    evaluate_evidence(now=NOW)

    assert EvidenceResult.objects.count() == 2 * len(evidence.REGISTRY)
    latest = EvidenceResult.objects.latest_by_key()
    assert set(latest) == set(evidence.REGISTRY)
    assert latest["fallback_chain"].measured_at == NOW and latest["fallback_chain"].status == "pass"
    assert ("checklist.jobs.evaluate_evidence", 600) in PERIODIC_JOBS


def test_the_import_binds_lines_to_checks_and_keeps_a_binding_made_in_the_admin() -> None:
    text = CUSTOMER_CHECKLIST.read_text()
    import_checklist(text)
    alerts = Item.objects.get(title="Set up billing alerts at 70%, 85%, 95% of budget")
    assert alerts.evidence_key == "billing_alerts"
    assert Item.objects.get(title="Quality Score").evidence_key == "satisfaction"
    bound = set(Item.objects.exclude(evidence_key="").values_list("evidence_key", flat=True))
    assert bound == set(evidence.REGISTRY), "every check backs at least one line"

    Item.objects.filter(pk=alerts.pk).update(evidence_key="monthly_spend")
    import_checklist(text)
    alerts.refresh_from_db()
    assert alerts.evidence_key == "monthly_spend"
