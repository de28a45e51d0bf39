"""Health probes: the simulator made to fail goes down, alerts once, comes back; breakers
close on a good probe; the status page's numbers; who may see it.

Probes run against the real simulator, on the real Redis, and the main scenario runs
through a real RQ worker taking the job the cron schedule enqueues.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import django_rq
import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.test import Client
from redis import Redis
from rq import SimpleWorker

from project.models import Alert
from routing.breaker import KEY
from routing.health import Seen, Thresholds, derive_state, run_probes
from routing.jobs import persist_breaker_transitions, purge_probe_results
from routing.models import BreakerEvent, Deployment, DeploymentHealth, ProbeResult
from routing.status import percentile, provider_state, status
from tests.servers import SimulatorHandle

START = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def deployment(provider: str) -> Deployment:
    return Deployment.objects.get(provider__name=provider)


def state_of(provider: str) -> str:
    return DeploymentHealth.objects.get(deployment=deployment(provider)).state


def alerts() -> list[tuple[str, str]]:
    """The provider alerts (an outage's incident alerts its ladder too: test_incident_hooks.py)."""
    provider_alerts = Alert.objects.exclude(kind="incident")
    return list(provider_alerts.order_by("created", "id").values_list("kind", "title"))


def run_probe_job() -> None:
    """What the cron schedule does every PROBE_SECONDS: enqueue the job; a worker runs it."""
    queue = django_rq.get_queue("default")
    job = queue.enqueue("routing.jobs.probe_deployments")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert job.get_status() == "finished", job.latest_result()


def breaker(redis: Redis, deployment_id: int) -> str:
    value = redis.hget(KEY.format(deployment_id), "state")
    return value.decode() if isinstance(value, bytes) else "closed"


def open_breaker(redis: Redis, deployment_id: int, seconds_ago: float) -> None:
    redis.hset(
        KEY.format(deployment_id),
        mapping={"state": "open", "opened_at": time.time() - seconds_ago},
    )


# -- probing the simulator ---------------------------------------------------------------


def test_each_deployment_gets_a_one_token_completion_with_the_production_key(
    demo: SimulatorHandle,
) -> None:
    probes = run_probes()

    assert sorted(p.label for p in probes) == sorted(str(d) for d in Deployment.objects.all())
    assert all(p.ok and p.status_code == 200 for p in probes)
    assert ProbeResult.objects.filter(ok=True).count() == Deployment.objects.count()
    assert set(DeploymentHealth.objects.values_list("state", flat=True)) == {"up"}
    assert all(r.cost_usd and r.cost_usd > 0 for r in ProbeResult.objects.all())
    calls = demo.calls()
    on_aimlapi = Deployment.objects.filter(provider__name="aimlapi").count()
    assert calls["aimlapi"]["count"] == on_aimlapi  # each of its models
    assert calls["aimlapi"]["last_request"]["max_tokens"] == 1
    assert calls["openai"]["last_request"]["max_completion_tokens"] == 1
    assert calls["anthropic"]["last_request"]["max_tokens"] == 1
    assert calls["google"]["last_request"]["generationConfig"] == {"maxOutputTokens": 1}
    assert calls["openai"]["last_headers"]["authorization"] == "Bearer simulator"
    assert Alert.objects.count() == 0


def test_a_failing_provider_goes_down_alerts_once_and_comes_back_through_an_rq_worker(
    demo: SimulatorHandle,
) -> None:
    demo.fault(provider="openai", mode="error", status=503)

    run_probe_job()
    run_probe_job()
    assert state_of("openai") == "degraded", "two failures are not an outage yet"
    assert alerts() == []

    run_probe_job()
    assert state_of("openai") == "down"
    assert alerts() == [("provider_down", "openai/gpt-4o-mini is down")]
    down = Alert.objects.get(kind="provider_down")
    assert down.severity == "critical" and down.data["status_code"] == 503

    run_probe_job()
    assert alerts() == [("provider_down", "openai/gpt-4o-mini is down")], "once per episode"
    assert state_of("google") == "up", "the others are unaffected"

    demo.clear()
    run_probe_job()
    assert state_of("openai") == "down", "one good probe is not a recovery"
    run_probe_job()
    assert state_of("openai") == "degraded", "back, with failures still in its window"
    assert alerts() == [
        ("provider_down", "openai/gpt-4o-mini is down"),
        ("provider_up", "openai/gpt-4o-mini is back (degraded)"),
    ]
    up = Alert.objects.get(kind="provider_up")
    assert (up.subject, up.period) == (down.subject, down.period), "the same episode"

    for _ in range(Thresholds.from_settings().window - 2):
        run_probe_job()
    assert state_of("openai") == "up"
    assert len(alerts()) == 2
    results = list(
        ProbeResult.objects.filter(deployment=deployment("openai"))
        .order_by("created")
        .values_list("ok", flat=True)
    )
    assert results[:4] == [False] * 4 and all(results[4:])


def test_a_second_outage_is_a_new_episode_with_its_own_alerts(demo: SimulatorHandle) -> None:
    for _ in range(2):
        demo.fault(provider="anthropic", mode="error", status=529)
        for _ in range(3):
            run_probes()
        demo.clear()
        for _ in range(2):
            run_probes()

    assert [kind for kind, _ in alerts()] == [
        "provider_down",
        "provider_up",
        "provider_down",
        "provider_up",
    ]


def test_a_provider_that_stops_answering_goes_down_on_the_probe_timeout(
    demo: SimulatorHandle, settings: Any
) -> None:
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "PROBE_TIMEOUT_SECONDS": 0.3}
    demo.fault(provider="google", mode="timeout", delay_ms=5000)

    started = time.monotonic()
    for _ in range(3):
        run_probes()

    assert time.monotonic() - started < 5, "each run waits the probe timeout, not the provider"
    assert state_of("google") == "down"
    result = ProbeResult.objects.filter(deployment=deployment("google")).first()
    assert result is not None
    assert (result.ok, result.status_code, result.error_code) == (False, None, "timeout")


def test_of_two_workers_that_see_the_same_outage_only_the_first_moves_it_and_alerts(
    demo: SimulatorHandle,
) -> None:
    from unittest import mock

    from routing.health import Probe, record_probe

    target = deployment("openai")
    failed = Probe(
        deployment_id=target.id,
        label=str(target),
        started=datetime.now(UTC),
        latency_ms=20,
        status_code=503,
        error_code="upstream_error",
    )
    record_probe(failed)
    record_probe(failed)
    # The second worker read the state (degraded) before the first moved it to down.
    stale = DeploymentHealth.objects.get(deployment=target)
    first = record_probe(failed)

    with mock.patch.object(DeploymentHealth.objects, "get_or_create", return_value=(stale, False)):
        second = record_probe(failed)

    assert first is not None and (first.before, first.after) == ("degraded", "down")
    assert second is None, "its conditional UPDATE found the state changed under it"
    assert state_of("openai") == "down"
    assert alerts() == [("provider_down", "openai/gpt-4o-mini is down")]


# -- breakers -------------------------------------------------------------------------


def test_a_good_probe_closes_a_breaker_whose_cool_down_is_over(
    demo: SimulatorHandle, redis: Redis
) -> None:
    target = deployment("openai")
    open_breaker(redis, target.id, seconds_ago=31)

    run_probes()

    assert breaker(redis, target.id) == "closed"
    persist_breaker_transitions()
    assert list(
        BreakerEvent.objects.filter(deployment=target)
        .order_by("created", "id")
        .values_list("from_state", "to_state", "reason")
    ) == [
        ("open", "half_open", "cool-down over; one trial call"),
        ("half_open", "closed", "a health probe succeeded"),
    ]


def test_a_good_probe_leaves_a_breaker_that_is_still_cooling_down_open(
    demo: SimulatorHandle, redis: Redis
) -> None:
    target = deployment("openai")
    open_breaker(redis, target.id, seconds_ago=5)

    run_probes()

    assert breaker(redis, target.id) == "open"
    health = DeploymentHealth.objects.get(deployment=target)
    assert (health.state, health.reason) == ("degraded", "its circuit breaker is open")


def test_a_bad_probe_keeps_a_cooled_down_breaker_open_for_another_cool_down(
    demo: SimulatorHandle, redis: Redis
) -> None:
    target = deployment("openai")
    open_breaker(redis, target.id, seconds_ago=31)
    demo.fault(provider="openai", mode="error", status=500)

    run_probes()

    assert breaker(redis, target.id) == "open"
    opened_at = float(redis.hget(KEY.format(target.id), "opened_at") or 0)
    assert opened_at > time.time() - 5, "the cool-down starts again"


def test_a_bad_probe_opens_a_half_open_breaker(demo: SimulatorHandle, redis: Redis) -> None:
    target = deployment("openai")
    redis.hset(KEY.format(target.id), mapping={"state": "half_open", "opened_at": time.time()})
    demo.fault(provider="openai", mode="error", status=500)

    run_probes()

    assert breaker(redis, target.id) == "open"


def test_failing_probes_never_open_a_closed_breaker(demo: SimulatorHandle, redis: Redis) -> None:
    demo.fault(provider="openai", mode="error", status=500)

    for _ in range(6):
        run_probes()

    assert state_of("openai") == "down"
    assert breaker(redis, deployment("openai").id) == "closed", "live traffic opens breakers"


def test_a_refused_production_key_is_down_and_reported_to_the_key_audit(
    demo: SimulatorHandle, redis: Redis
) -> None:
    from routing.engine import CREDENTIAL_REFUSED
    from routing.models import ProviderCredential

    credential = ProviderCredential.objects.get(provider__name="openai", environment="prod")
    credential.set_secret("invalid-sk-0123456789abcdefghij")
    credential.save()

    for _ in range(3):
        run_probes()

    assert state_of("openai") == "down"
    result = ProbeResult.objects.filter(deployment=deployment("openai")).first()
    assert result is not None and result.error_code == "invalid_api_key"
    assert "0123456789abcdefghij" not in result.error
    assert redis.hexists(CREDENTIAL_REFUSED, str(credential.id))


# -- the state, from probe histories -----------------------------------------------------

RULES = Thresholds(down_after=3, up_after=2, window=10, slow_ms=1000)
GOOD, BAD = Seen(True, 100), Seen(False, 100, "upstream_error")


@pytest.mark.parametrize(
    ("recent", "previous", "breaker_state", "expected"),
    [
        ([], "unknown", "closed", "unknown"),
        ([GOOD] * 5, "unknown", "closed", "up"),
        ([BAD, BAD, GOOD], "up", "closed", "degraded"),
        ([BAD] * 3, "up", "closed", "down"),
        ([GOOD, BAD, BAD, BAD], "down", "closed", "down"),
        ([GOOD, GOOD, BAD, BAD, BAD], "down", "closed", "degraded"),
        ([GOOD] * 10 + [BAD], "degraded", "closed", "up"),
        ([Seen(True, 1500)] * 3, "up", "closed", "degraded"),
        ([Seen(True, 1500), GOOD, GOOD], "up", "closed", "up"),
        ([GOOD] * 3, "up", "half_open", "degraded"),
    ],
)
def test_the_state_follows_the_latest_probes(
    recent: list[Seen], previous: str, breaker_state: str, expected: str
) -> None:
    state, reason = derive_state(recent, previous, breaker_state, RULES)

    assert state == expected, reason


def test_a_provider_is_up_only_when_every_probed_model_is() -> None:
    assert provider_state(["up", "unknown"]) == "up"
    assert provider_state(["up", "down"]) == "degraded"
    assert provider_state(["down", "down"]) == "down"
    assert provider_state(["unknown"]) == "unknown"


# -- the status page's numbers -------------------------------------------------------------


def seed_history(target: Deployment) -> None:
    """Hourly probes before the last day, 10 of them failed 20 days ago; then one every
    15 minutes in the last day, 2 of 96 failed."""
    rows = []
    for hours in range(25, 30 * 24):  # one an hour, from 25 hours to 30 days ago
        moment = START - timedelta(hours=hours)
        ok = not (20 * 24 <= hours < 20 * 24 + 100 and hours % 10 == 0)
        rows.append(ProbeResult(deployment=target, created=moment, ok=ok, latency_ms=500))
    for quarter in range(96):  # every 15 minutes in the last day, 10 to 960 ms
        moment = START - timedelta(minutes=15 * quarter + 1)
        ok = quarter not in (3, 4)
        rows.append(
            ProbeResult(
                deployment=target,
                created=moment,
                ok=ok,
                latency_ms=10 * (quarter + 1),
                cost_usd=Decimal("0.000001"),
            )
        )
    ProbeResult.objects.bulk_create(rows)


@pytest.mark.django_db
def test_uptime_and_latency_come_from_the_probe_history() -> None:
    from tests.factories import load_demo_config

    load_demo_config("http://127.0.0.1:9")
    target = deployment("openai")
    seed_history(target)

    with time_machine.travel(START, tick=False):
        page = status()

    openai = next(p for p in page["providers"] if p.provider.name == "openai")
    row = openai.deployments[0]
    assert (row.day.ok, row.day.total, row.day.pct) == (94, 96, Decimal("97.92"))
    assert (row.month.ok, row.month.total, row.month.pct) == (779, 791, Decimal("98.48"))
    # The successful probes' latencies: 10, 20, 30, then 60 to 960 ms (94 of them).
    assert (row.p50_ms, row.p95_ms) == (490, 920)
    assert row.cost_month == Decimal("0.000096")
    assert openai.day.pct == Decimal("97.92") and openai.state == "unknown"
    line = page["chart"]["providers"][[p.provider.name for p in page["providers"]].index("openai")]
    assert line["lines"][0]["label"] == "gpt-4o-mini"
    assert len(page["chart"]["labels"]) == 96 and page["chart"]["labels"][-1] == "08:45"
    assert line["lines"][0]["data"][-1] == 10, "the newest quarter hour's median"
    assert line["lines"][0]["data"][-4] is None, "failed probes draw no latency"


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7
    assert percentile(list(range(1, 101)), 50) == 50
    assert percentile(list(range(1, 101)), 95) == 95


@pytest.mark.django_db
def test_probe_results_are_kept_for_the_retention_period_then_purged() -> None:
    from tests.factories import load_demo_config

    load_demo_config("http://127.0.0.1:9")
    target = deployment("openai")
    for days in (0, 30, 34, 36, 60):
        ProbeResult.objects.create(
            deployment=target, created=START - timedelta(days=days), ok=True, latency_ms=1
        )

    with time_machine.travel(START, tick=False):
        assert purge_probe_results() == 2

    assert ProbeResult.objects.count() == 3


def test_the_probes_run_every_probe_seconds_and_the_purge_hourly() -> None:
    from django.conf import settings

    from project.cron import PERIODIC_JOBS

    jobs = dict(PERIODIC_JOBS)
    assert jobs["routing.jobs.probe_deployments"] == settings.SWITCHBOARD["PROBE_SECONDS"] == 30
    assert jobs["routing.jobs.purge_probe_results"] == 3600


# -- the status page ---------------------------------------------------------------------

STATUS_PAGE = "/admin/routing/deploymenthealth/"


@pytest.fixture
def probed(demo: SimulatorHandle) -> Iterator[SimulatorHandle]:
    demo.fault(provider="google", mode="error", status=503)
    for _ in range(3):
        run_probes()
    yield demo


def staff(role: str) -> Client:
    user = User.objects.create_user(role.lower(), f"{role.lower()}@example.com", "pw")
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_the_status_page_sends_anonymous_visitors_to_log_in(probed: SimulatorHandle) -> None:
    response = Client().get(STATUS_PAGE)

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("role", ["Finance", "Stakeholder"])
def test_the_status_page_is_refused_to_roles_without_the_gateway(
    probed: SimulatorHandle, role: str
) -> None:
    assert staff(role).get(STATUS_PAGE).status_code == 403


@pytest.mark.parametrize("role", ["Viewer", "Operator", "Administrator"])
def test_the_status_page_shows_each_provider_with_its_chart_data(
    probed: SimulatorHandle, role: str
) -> None:
    response = staff(role).get(STATUS_PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="health-data"' in html and "billing/vendor/chart.umd.min.js" in html
    assert "share of" in html and "probes that succeeded" in html
    chart = response.context["chart"]
    assert [p["provider"] for p in chart["providers"]] == [
        "aimlapi",
        "openai",
        "google",
        "anthropic",
    ]
    rows = {p.provider.name: p for p in response.context["providers"]}
    assert rows["google"].state == "down" and rows["openai"].state == "up"
    assert rows["google"].day.pct == Decimal("0.00") and rows["openai"].day.pct == 100
    assert 'class="state state-down">down<' in html


def test_the_provider_list_links_to_the_status_page(probed: SimulatorHandle) -> None:
    response = staff("Viewer").get("/admin/routing/provider/")

    assert STATUS_PAGE in response.content.decode()
