"""/metrics: Prometheus counters that equal the ledger, shared-state gauges, and who may scrape."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from billing.ledger import LEDGER_KEY
from billing.models import Budget, UsageRecord
from routing import metrics
from routing.engine import Answer
from routing.models import ClientKey
from tests.factories import answer_in_process, drain_ledger, make_client_key
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, token: str | None = None) -> Samples:
    """GET /metrics over HTTP; every sample by (name, sorted labels)."""
    request = urllib.request.Request(f"{base_url}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with _opener.open(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(after: Samples, before: Samples, name: str, *labels: str) -> dict[tuple, float]:
    """What each label set of counter `name` gained between two scrapes (non-zero only)."""
    grown: dict[tuple, float] = defaultdict(float)
    for (sample, labelled), value in after.items():
        if sample != name:
            continue
        gained = value - before.get((sample, labelled), 0.0)
        if gained:
            found = dict(labelled)
            grown[tuple(found[label] for label in labels)] += gained
    return dict(grown)


def ledger_counts(*fields: str) -> dict[tuple, float]:
    return dict(
        Counter(tuple(row) for row in UsageRecord.objects.values_list(*fields)).most_common()
    )


def test_after_a_fault_scenario_the_scraped_counters_match_the_ledger_exactly(
    openai_client: openai.OpenAI, gateway: str, demo: SimulatorHandle
) -> None:
    before = scrape(gateway)
    demo.fault(provider="aimlapi", mode="error", status=503)

    # Fall back: aimlapi fails (retried once), openai answers.
    for _ in range(3):
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)
    stream = openai_client.chat.completions.create(
        model="summary", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert "openai" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # Fail: the only candidate is down.
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            openai_client.chat.completions.create(model="aimlapi/gpt-4o-mini", messages=MESSAGES)
    # A cache hit: the same deterministic request twice.
    for _ in range(2):
        openai_client.chat.completions.create(model="summary", messages=MESSAGES, temperature=0)
    # Budget-refused: the route's budget cannot hold one request.
    Budget.objects.create(
        scope="route", scope_ref="fallback-demo", amount_usd=Decimal("0.0000001"), hard=True
    )
    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="fallback-demo", messages=MESSAGES)
    # Rate-limited: a key allowed one request a minute asks twice.
    limited = openai.OpenAI(
        base_url=f"{gateway}/v1", api_key=make_client_key("limited"), max_retries=0
    )
    key = ClientKey.objects.get(name="limited")
    key.rpm, key.burst = 1, 0
    key.save()
    limited.chat.completions.create(model="summary", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(model="summary", messages=MESSAGES)
    limited.close()

    assert drain_ledger() == 11
    after = scrape(gateway)

    labels = ("route", "provider", "model", "status", "code")
    fields = ("route", "provider", "model", "status", "error_code")
    assert delta(after, before, "switchboard_requests_total", *labels) == ledger_counts(*fields)
    statuses = {row[3] for row in ledger_counts(*fields)}
    assert statuses == {"ok", "error", "rejected"}, "the scenario has every kind of outcome"

    tokens: dict[tuple, float] = defaultdict(float)
    cost: dict[tuple, Decimal] = defaultdict(Decimal)
    for record in UsageRecord.objects.all():
        where = (record.route, record.provider, record.model)
        if record.prompt_tokens:
            tokens[(*where, "prompt")] += record.prompt_tokens
        if record.completion_tokens:
            tokens[(*where, "completion")] += record.completion_tokens
        if record.cost_usd:
            cost[where] += record.cost_usd
    assert delta(
        after, before, "switchboard_tokens_total", "route", "provider", "model", "kind"
    ) == dict(tokens)
    scraped_cost = delta(after, before, "switchboard_cost_usd_total", "route", "provider", "model")
    assert scraped_cost.keys() == cost.keys()
    for where, amount in cost.items():
        assert scraped_cost[where] == pytest.approx(float(amount), rel=1e-9)

    assert delta(after, before, "switchboard_cache_hits_total", "route") == {("summary",): 1}
    assert delta(after, before, "switchboard_refused_total", "route", "reason") == {
        ("fallback-demo", "budget"): 1,
        ("summary", "rate_limit"): 1,
    }
    fallbacks: Counter[tuple[str, str]] = Counter()
    retries: Counter[tuple[str, str]] = Counter()
    attempts: Counter[tuple[str, str, str]] = Counter()
    for record in UsageRecord.objects.all():
        for previous, attempt in zip(record.attempts, record.attempts[1:], strict=False):
            if previous["deployment_id"] == attempt["deployment_id"]:
                retries[(record.route, attempt["provider"])] += 1
            else:
                fallbacks[(record.route, previous["provider"])] += 1
        for attempt in record.attempts:
            attempts[(attempt["provider"], attempt["model"], attempt["outcome"])] += 1
    assert fallbacks and retries
    assert delta(after, before, "switchboard_fallbacks_total", "route", "provider") == fallbacks
    assert delta(after, before, "switchboard_retries_total", "route", "provider") == retries
    assert (
        delta(after, before, "switchboard_provider_attempts_total", "provider", "model", "outcome")
        == attempts
    )
    # Every request is timed once; streams that a provider answered have a first token.
    durations = delta(after, before, "switchboard_request_duration_seconds_count", "route")
    assert sum(durations.values()) == UsageRecord.objects.count()
    assert sum(delta(after, before, "switchboard_time_to_first_token_seconds_count").values()) == 1


def here(metric: Any, sample: str, **labels: str) -> float:
    """A sample of one of this process's metrics (the in-process API's), 0 if none yet."""
    for family in metric.collect():
        for found in family.samples:
            if found.name == sample and labels.items() <= found.labels.items():
                return float(found.value)
    return 0.0


def answered_here(route: str, provider: str) -> float:
    """This process's count of ``route``'s answers by ``provider``."""
    return here(
        metrics.REQUESTS, "switchboard_requests_total", route=route, provider=provider, status="ok"
    )


def test_a_whole_answer_is_handed_over_once_written_down_and_counted_after_that(
    demo: SimulatorHandle, redis: Any
) -> None:
    before = answered_here("summary", "aimlapi")
    seen: list[tuple[int, float]] = []

    async def deliver(answer: Answer) -> None:
        seen.append((redis.llen(LEDGER_KEY), answered_here("summary", "aimlapi")))

    answer_in_process(deliver)

    assert seen == [(1, before)], "in the ledger before the client has it; not counted yet"
    assert answered_here("summary", "aimlapi") == before + 1


def test_an_answer_whose_client_went_away_is_still_counted_as_the_ledger_has_it(
    demo: SimulatorHandle, redis: Any
) -> None:
    before = answered_here("summary", "aimlapi")

    async def deliver(answer: Answer) -> None:
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        answer_in_process(deliver)

    assert answered_here("summary", "aimlapi") == before + 1
    assert drain_ledger() == 1


def test_a_slow_client_does_not_lengthen_the_recorded_duration(demo: SimulatorHandle) -> None:
    def seconds() -> float:
        return here(
            metrics.DURATION,
            "switchboard_request_duration_seconds_sum",
            route="summary",
            provider="aimlapi",
        )

    before = seconds()

    async def deliver(answer: Answer) -> None:
        await asyncio.sleep(0.5)  # a client that reads slowly

    answer_in_process(deliver)

    assert 0 < seconds() - before < 0.5


def test_shared_state_is_read_at_scrape_time(
    openai_client: openai.OpenAI, gateway: str, demo: SimulatorHandle, redis: Any
) -> None:
    Budget.objects.filter(scope="global").update(amount_usd=Decimal("0.001"), hard=False)
    demo.fault(provider="aimlapi", mode="error", status=500)
    for _ in range(3):  # two failed calls each: the fifth opens aimlapi's breaker
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    samples = scrape(gateway)

    breakers = {
        dict(labels)["provider"] + "/" + dict(labels)["model"]: value
        for (name, labels), value in samples.items()
        if name == "switchboard_breaker_state"
    }
    assert breakers["aimlapi/gpt-4o-mini"] == 2  # open
    assert breakers["openai/gpt-4o-mini"] == 0
    assert samples[("switchboard_ledger_backlog", ())] == 3  # not drained yet
    spent = [v for (n, _), v in samples.items() if n == "switchboard_budget_spent_usd"]
    ratio = [v for (n, _), v in samples.items() if n == "switchboard_budget_utilisation_ratio"]
    assert spent[0] > 0 and ratio[0] == pytest.approx(spent[0] / 0.001)
    queues = {dict(labels)["queue"] for (n, labels) in samples if n == "switchboard_rq_queue_depth"}
    assert queues == {"default", "batch"}


@pytest.mark.django_db
@override_settings(SWITCHBOARD_METRICS_TOKEN="", SWITCHBOARD_METRICS_ALLOW=["127.0.0.1", "::1"])
def test_an_address_outside_the_allow_list_is_refused_with_403() -> None:
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    refused = Client(REMOTE_ADDR="203.0.113.9").get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "metrics_not_allowed"


@pytest.mark.django_db
@override_settings(SWITCHBOARD_METRICS_TOKEN="scrape-me-0123456789", SWITCHBOARD_METRICS_ALLOW=[])
def test_the_bearer_token_lets_any_address_scrape_and_a_wrong_one_is_401() -> None:
    outside = Client(REMOTE_ADDR="203.0.113.9")
    ok = outside.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"})
    assert ok.status_code == 200 and b"switchboard_ledger_backlog" in ok.content
    wrong = outside.get("/metrics", headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_metrics_token"
    missing = outside.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@override_settings(SWITCHBOARD_METRICS_ALLOW=["10.0.0.0/8"])
def test_the_allow_list_takes_networks() -> None:
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="11.1.2.3").get("/metrics").status_code in (401, 403)


def test_over_http_an_unknown_caller_sees_no_metrics(gateway: str) -> None:
    with (
        override_settings(SWITCHBOARD_METRICS_ALLOW=[], SWITCHBOARD_METRICS_TOKEN=""),
        pytest.raises(urllib.error.HTTPError) as refused,
    ):
        scrape(gateway)
    refused.value.close()
    assert refused.value.code == 403


@pytest.mark.slow
def test_gateway_processes_sharing_a_metrics_directory_add_up_on_any_scrape(
    demo: SimulatorHandle, client_key: str, tmp_path: Any
) -> None:
    from django.conf import settings

    from tests.conftest import database_url
    from tests.servers import start_gateway_processes

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SWITCHBOARD_TABLE_CHECK_SECONDS": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    started = start_gateway_processes(2, env)
    try:
        for count, (url, _) in zip((2, 3), started, strict=True):
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
            for _ in range(count):
                client.chat.completions.create(model="summary", messages=MESSAGES)
            client.close()
        scrapes = [scrape(url) for url, _ in started]
    finally:
        for _, process in started:
            process.terminate()
        for _, process in started:
            process.wait(timeout=10)

    key = (
        "switchboard_requests_total",
        tuple(
            sorted(
                {
                    "route": "summary",
                    "provider": "aimlapi",
                    "model": "gpt-4o-mini",
                    "status": "ok",
                    "code": "",
                }.items()
            )
        ),
    )
    assert scrapes[0][key] == scrapes[1][key] == 5


@pytest.mark.django_db
def test_the_grafana_dashboard_uses_only_metrics_that_metrics_exposes() -> None:
    import re
    from pathlib import Path

    dashboard = (Path(__file__).parents[2] / "docs" / "grafana-switchboard.json").read_text()
    used = set(re.findall(r"switchboard_[a-z_]+", dashboard)) - {"switchboard"}
    exposed = {
        family.name
        for family in text_string_to_metric_families(
            Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
        )
    }

    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|count|sum)$", "", name)

    assert used and {name for name in used if family(name) not in exposed} == set()
