"""Rate limits per client key and per deployment, held in Redis across gateway processes,
and providers' own rate-limit answers moving their deployments to the back of a route."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from billing.models import UsageRecord
from routing.models import ClientKey, Deployment, Route, RouteStep
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def limit_key(**limits: Any) -> ClientKey:
    key = ClientKey.objects.get()
    for name, value in limits.items():
        setattr(key, name, value)
    key.save()  # bumps the configuration version: every gateway re-reads its table
    return key


def route(name: str, *labels: str) -> None:
    """A route through the demo's deployments, in the order given ("openai/gpt-4o-mini")."""
    created = Route.objects.create(name=name)
    for position, label in enumerate(labels, start=1):
        provider, model = label.split("/")
        deployment = Deployment.objects.get(provider__name=provider, name=model)
        RouteStep.objects.create(route=created, deployment=deployment, position=position)


async def burst(
    urls: list[str], key: str, count: int, warm: bool = False, model: str = "summary", **body: Any
) -> list[Any]:
    """``count`` requests at once, spread over ``urls``: each raw response or the SDK's error.

    ``warm`` first opens every connection the burst will use (GET /v1/models, which no
    rate limit counts), so that the requests reach the gateways within milliseconds.
    """
    clients = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) for url in urls]
    try:
        if warm:
            per_client = -(-count // len(clients))
            await asyncio.gather(*(c.models.list() for c in clients for _ in range(per_client)))
        calls = [
            clients[i % len(clients)].chat.completions.with_raw_response.create(
                model=model, messages=MESSAGES, **body
            )
            for i in range(count)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.slow
def test_sixty_rpm_with_a_burst_of_ten_admits_exactly_seventy_of_a_hundred_across_two_gateways(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    limit_key(rpm=60, burst=10)

    results = asyncio.run(burst(two_gateways, client_key, 100, warm=True))

    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(answered) == 70
    assert {type(r) for r in refused} == {openai.RateLimitError}
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    # 60 a minute is one a second: the next one is due within a second.
    assert {r.response.headers["retry-after"] for r in refused} == {"1"}
    for error in refused:
        headers = error.response.headers
        assert 0 < int(headers["retry-after-ms"]) <= 1000
        assert headers["x-ratelimit-limit-requests"] == "70"
        assert headers["x-ratelimit-remaining-requests"] == "0"
    assert demo.count("aimlapi") == 70

    time.sleep(1.0)  # as Retry-After said
    again = openai.OpenAI(base_url=f"{two_gateways[0]}/v1", api_key=client_key, max_retries=0)
    with again:
        raw = again.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES)
    assert int(raw.headers["x-ratelimit-remaining-requests"]) <= 2  # what refilled meanwhile
    assert drain_ledger() == 101
    assert UsageRecord.objects.filter(status="rejected", http_status=429).count() == 30


def test_a_refusal_says_which_limit_and_when_as_openai_does(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    limit_key(rpm=2, burst=0)

    first = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )
    second = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    headers = caught.value.response.headers
    assert caught.value.code == "rate_limit_exceeded"
    assert "2 requests per minute" in caught.value.message
    # One request comes back every 30 s at 2 a minute; the bucket is full again in 60.
    assert 25 <= int(headers["retry-after"]) <= 30
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert (
        "m" in headers["x-ratelimit-reset-requests"]
        or float(headers["x-ratelimit-reset-requests"].removesuffix("s")) > 50
    )
    assert "x-ratelimit-limit-tokens" not in headers
    assert headers["x-switchboard-request-id"]
    assert demo.count("aimlapi") == 2


def test_a_key_without_limits_sends_no_rate_limit_headers(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert "x-ratelimit-limit-requests" not in raw.headers


def test_a_key_at_its_concurrency_limit_is_refused_until_a_request_finishes(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    limit_key(max_concurrent=2)
    demo.fault(provider="aimlapi", mode="slow", delay_ms=1500, times=2)

    results = asyncio.run(burst([gateway], client_key, 4))

    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(answered) == 2
    assert {r.code for r in refused} == {"concurrency_limit_exceeded"}
    assert {r.response.headers["retry-after"] for r in refused} == {"1"}
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=client_key, max_retries=0)
    with client:  # both slots were given back with the usage entries
        client.chat.completions.create(model="summary", messages=MESSAGES)
        client.chat.completions.create(model="summary", messages=MESSAGES)


def test_a_concurrency_slot_of_a_crashed_process_expires(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Any
) -> None:
    key = limit_key(max_concurrent=1)
    # A slot another process took, and never gave back: it died.
    slots = f"sb:rl:{{k{key.id}}}:slots"
    redis.zadd(slots, {"dead-request": (time.time() + 1) * 1000})

    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)
    time.sleep(1.1)
    openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    assert redis.zcard(slots) == 0


def test_a_key_over_its_tokens_per_minute_is_refused_before_any_provider_call(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    limit_key(tpm=1000)
    # The estimate (the prompt plus max_tokens) is what the bucket must hold up front.
    openai_client.chat.completions.create(model="summary", messages=MESSAGES, max_tokens=900)

    with pytest.raises(openai.RateLimitError) as caught:
        # The first request's estimate was corrected to what it used (a few dozen
        # tokens), so a small request fits and a large one does not.
        openai_client.chat.completions.create(model="summary", messages=MESSAGES, max_tokens=990)

    headers = caught.value.response.headers
    assert "1000 tokens per minute" in caught.value.message
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert 900 < int(headers["x-ratelimit-remaining-tokens"]) < 1000
    assert int(headers["retry-after"]) >= 1
    assert demo.count("aimlapi") == 1
    openai_client.chat.completions.create(model="summary", messages=MESSAGES, max_tokens=600)
    assert demo.count("aimlapi") == 2


def test_a_deployment_at_its_own_limit_passes_the_request_to_the_next_provider(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    Deployment.objects.filter(provider__name="aimlapi", name="gpt-4o-mini").update(rpm=2)
    Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini").save()  # bump

    served_by = [
        openai_client.chat.completions.with_raw_response.create(
            model="summary", messages=MESSAGES
        ).headers["x-switchboard-provider"]
        for _ in range(3)
    ]

    assert served_by == ["aimlapi", "aimlapi", "openai"]
    assert demo.count("aimlapi") == 2
    drain_ledger()
    spilled = UsageRecord.objects.order_by("created").last()
    assert spilled is not None
    assert spilled.attempts[0]["code"] == "deployment_rate_limited"


def test_when_every_candidate_is_at_its_limit_the_answer_is_429(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    route("solo", "openai/gpt-4o-mini")
    deployment = Deployment.objects.get(provider__name="openai", name="gpt-4o-mini")
    deployment.rpm = 1
    deployment.save()

    openai_client.chat.completions.create(model="solo", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(model="solo", messages=MESSAGES)

    assert caught.value.code == "rate_limit_exceeded"
    assert "openai/gpt-4o-mini is at its limit of 1 requests per minute" in caught.value.message
    assert 50 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert demo.count("openai") == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"),
        ("anthropic/claude-3-5-haiku-latest", "openai/gpt-4o-mini"),
    ],
)
def test_a_provider_whose_headers_say_its_quota_is_nearly_spent_goes_last(
    openai_client: openai.OpenAI, demo: SimulatorHandle, first: str, second: str
) -> None:
    route("pair", first, second)
    provider = first.split("/")[0]
    demo.fault(provider=provider, mode="quota_low", retry_after=30, times=1)

    served_by = [
        openai_client.chat.completions.with_raw_response.create(
            model="pair", messages=MESSAGES
        ).headers["x-switchboard-provider"]
        for _ in range(3)
    ]

    # It answered, saying one request was left: the next requests go elsewhere first.
    assert served_by == [provider, second.split("/")[0], second.split("/")[0]]
    assert demo.count(provider) == 1


def test_a_gemini_429_keeps_google_at_the_back_for_its_retry_delay(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    route("google-first", "google/gemini-2.0-flash", "openai/gpt-4o-mini")
    # A retryDelay beyond the retry cap: the request moves on at once.
    demo.fault(provider="google", mode="rate_limit", retry_after=20, times=1)

    served_by = [
        openai_client.chat.completions.with_raw_response.create(
            model="google-first", messages=MESSAGES
        ).headers["x-switchboard-provider"]
        for _ in range(2)
    ]

    assert served_by == ["openai", "openai"]
    assert demo.count("google") == 1


def test_a_deprioritised_provider_is_still_tried_when_the_others_fail(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Any
) -> None:
    route("pair", "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest")
    demo.fault(provider="openai", mode="quota_low", retry_after=30, times=1)
    openai_client.chat.completions.create(model="pair", messages=MESSAGES)
    demo.fault(provider="anthropic", mode="error", status=503)

    raw = openai_client.chat.completions.with_raw_response.create(model="pair", messages=MESSAGES)

    assert raw.headers["x-switchboard-provider"] == "openai"
    # It said it had room again, so it leads the route once more.
    assert not redis.keys("sb:quota:*")


LIMITS_FILE = """\
providers:
  acme: {protocol: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: ACME_KEY}
models:
  - {provider: acme, name: m1, rpm: 500, tpm: 200000}
  - {provider: acme, name: m2}
limits:
  keys:
    notes-service: {rpm: 600, tpm: 100000, max_concurrent: 20, burst: 60}
"""


@pytest.mark.django_db
def test_limits_are_configuration_as_code_in_and_out(tmp_path: Any) -> None:
    from io import StringIO

    import yaml
    from django.core.management import call_command

    from routing.actions import create_client_key

    key, _ = create_client_key("notes-service", ["chat"])
    path = tmp_path / "switchboard.yaml"
    path.write_text(LIMITS_FILE)

    out = StringIO()
    call_command("import_config", str(path), stdout=out)

    assert "1 key limits updated" in out.getvalue()
    key.refresh_from_db()
    assert (key.rpm, key.tpm, key.max_concurrent, key.burst) == (600, 100000, 20, 60)
    m1 = Deployment.objects.get(name="m1")
    assert (m1.rpm, m1.tpm) == (500, 200000)
    assert Deployment.objects.get(name="m2").rpm is None
    exported = StringIO()
    call_command("export_config", stdout=exported)
    data = yaml.safe_load(exported.getvalue())
    assert data["limits"] == {
        "keys": {"notes-service": {"rpm": 600, "tpm": 100000, "max_concurrent": 20, "burst": 60}}
    }
    assert {m["name"]: m.get("rpm") for m in data["models"]} == {"m1": 500, "m2": None}
    again = StringIO()
    call_command("import_config", str(path), stdout=again)
    assert "1 key limits unchanged" in again.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("limits:\n  keys:\n    nobody: {rpm: 5}\n", "line 3: limits.keys.nobody: no active"),
        (
            "limits:\n  keys:\n    svc: {rpm: 0}\n",
            "line 3: limits.keys.svc.rpm: must be a positive",
        ),
        ("limits:\n  keys:\n    svc: {burst: 5}\n", "line 3: limits.keys.svc.burst: is on top"),
        ("limits:\n  keys:\n    svc: {rps: 5}\n", "line 3: limits.keys.svc.rps: unknown field"),
        ("limits:\n  routes: {}\n", "line 2: limits.routes: unknown field"),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x'}\n"
            "models:\n  - {provider: x, name: m, tpm: 1.5}\n",
            "line 4: models[0].tpm: must be a whole number",
        ),
    ],
)
def test_a_bad_limit_names_its_line_and_changes_nothing(
    tmp_path: Any, limits: str, message: str
) -> None:
    from django.core.management import CommandError, call_command

    from routing.actions import create_client_key

    key, _ = create_client_key("svc", ["chat"])
    path = tmp_path / "switchboard.yaml"
    path.write_text(limits)

    with pytest.raises(CommandError) as caught:
        call_command("import_config", str(path))

    assert message in str(caught.value)
    assert "Nothing was changed" in str(caught.value)
    key.refresh_from_db()
    assert key.rpm is None


@pytest.mark.django_db
def test_a_rotated_key_keeps_its_limits() -> None:
    from datetime import timedelta

    from routing.actions import create_client_key, rotate_client_key

    key, _ = create_client_key("svc", ["chat"])
    key.rpm, key.burst, key.max_concurrent = 100, 10, 3
    key.save()

    successor, _ = rotate_client_key(key, timedelta(hours=1))

    assert (successor.rpm, successor.burst, successor.max_concurrent) == (100, 10, 3)


def test_upstream_rate_limit_headers_read_as_one_shape() -> None:
    from datetime import UTC, datetime

    from routing.providers.anthropic import rate_limit_headers as anthropic_quota
    from routing.providers.base import Quota, go_duration
    from routing.providers.gemini import GeminiAdapter
    from routing.providers.openai import rate_limit_headers as openai_quota

    assert go_duration("6m0s") == 360
    assert go_duration("1h2m3.5s") == 3723.5
    assert go_duration("12ms") == pytest.approx(0.012)
    assert go_duration("soon") is None
    assert openai_quota(
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "1m30s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "120ms",
        }
    ) == Quota(10000, 3, 90.0, 30000, 29000, pytest.approx(0.12))
    assert openai_quota({"x-request-id": "r"}) is None
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    quota = anthropic_quota(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:10Z",
            "anthropic-ratelimit-tokens-limit": "100000",
            "anthropic-ratelimit-tokens-remaining": "90000",
            "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:20Z",
            # The tightest of the three token limits is the one reported.
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "100",
            "anthropic-ratelimit-output-tokens-reset": "2026-01-01T00:00:05Z",
        },
        now=now,
    )
    assert quota == Quota(50, 49, 10.0, 8000, 100, 5.0)
    body = (
        b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",'
        b' "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",'
        b' "retryDelay": "20s"}]}}'
    )
    assert GeminiAdapter().quota(429, {}, body) == Quota(requests_remaining=0, requests_reset=20.0)
    assert GeminiAdapter().quota(200, {}) is None


def test_a_quota_is_nearly_spent_below_the_reserve() -> None:
    from routing.limits import nearly_spent
    from routing.providers.base import Quota

    assert nearly_spent(Quota(10000, 600, 5.0), 0.05) is None
    assert nearly_spent(Quota(10000, 400, 5.0), 0.05) == 5.0
    assert nearly_spent(Quota(tokens_limit=1000, tokens_remaining=10, tokens_reset=2.0), 0.05) == 2
    assert nearly_spent(Quota(requests_remaining=0), 0.05) == 5.0  # a bare 429
    assert nearly_spent(Quota(10000, 0, 3600.0), 0.05) == 60.0  # never longer than a minute
    assert nearly_spent(None, 0.05) is None
