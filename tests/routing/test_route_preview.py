"""POST /api/v1/route/preview: the dry run, and that it agrees with what really happens."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from billing.models import UsageRecord
from routing.breaker import KEY as BREAKER_KEY
from routing.models import Deployment, RoutingRule
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


@pytest.fixture
def preview(gateway: str, client_key: str, demo: SimulatorHandle) -> Iterator[Callable[..., Any]]:
    with httpx.Client(base_url=gateway, timeout=10) as http:

        def call(body: dict[str, Any]) -> Any:
            response = http.post(
                "/api/v1/route/preview",
                json=body,
                headers={"Authorization": f"Bearer {client_key}"},
            )
            return response

        yield call


def test_the_preview_shows_the_context_the_rule_and_the_ranked_candidates_with_costs(
    preview: Callable[..., Any], demo: SimulatorHandle
) -> None:
    transcript = "\n".join(f"Speaker{n}: the board wants the numbers." for n in range(7))
    response = preview(
        {
            "model": "summary",
            "messages": [{"role": "user", "content": transcript}],
            "metadata": {"meeting_type": "executive", "language": "en"},
        }
    )

    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["route"] == "executive"
    context = shown["context"]
    assert context["meeting_type"] == "executive"
    assert context["meeting_type_confidence"] == 1.0
    assert context["language_confidence"] == 1.0
    assert context["participants"] == 7
    assert context["sources"]["participants"] == "detected"
    assert [m["rule"] for m in shown["rule"]["matched"]] == ["executive-meetings", "large-meetings"]
    assert shown["params"] == {"max_tokens": 400 + 60 * 7}
    ranking = shown["ranking"]
    assert ranking["strategy"] == "ordered"
    assert [(c["rank"], c["deployment"], c["reason"]) for c in ranking["candidates"]] == [
        (1, "aimlapi/gpt-4o", "position 1 in the route"),
        (2, "aimlapi/claude-3-5-sonnet-latest", "position 2 in the route"),
        (3, "anthropic/claude-3-5-haiku-latest", "position 3 in the route"),
    ]
    costs = [Decimal(c["estimated_cost_usd"]) for c in ranking["candidates"]]
    assert costs[1] > costs[0] > costs[2] > 0  # Sonnet dearest, Haiku cheapest
    assert shown["first"] == "aimlapi/gpt-4o"
    assert demo.calls()["aimlapi"]["count"] == 0  # no provider was called
    assert drain_ledger() == 0  # and nothing recorded as usage


def test_the_preview_refuses_what_the_gateway_refuses(preview: Callable[..., Any]) -> None:
    unknown = preview({"model": "nothing-here", "messages": MESSAGES})
    healthcare_eu = preview(
        {
            "model": "summary",
            "messages": MESSAGES,
            "metadata": {"industry": "healthcare", "data_region": "eu"},
        }
    )
    empty = preview({"model": "summary", "messages": []})

    assert unknown.status_code == 404
    assert healthcare_eu.status_code == 403
    assert healthcare_eu.json()["error"]["code"] == "no_compliant_provider"
    assert empty.status_code == 400
    assert empty.json()["error"]["param"] == "messages"


# -- the preview and the actual choice agree ----------------------------------------------------


def nothing(client: openai.OpenAI, demo: SimulatorHandle, redis: Redis) -> None:
    pass


def aimlapi_slow_google_fast(client: openai.OpenAI, demo: SimulatorHandle, redis: Redis) -> None:
    demo.fault(provider="aimlapi", mode="slow", delay_ms=300)
    client.chat.completions.create(model="aimlapi/gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    demo.clear()
    client.chat.completions.create(model="google/gemini-2.0-flash", messages=MESSAGES)  # type: ignore[arg-type]


def aimlapi_breaker_open(client: openai.OpenAI, demo: SimulatorHandle, redis: Redis) -> None:
    for name in ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-latest"):
        deployment = Deployment.objects.get(provider__name="aimlapi", name=name)
        redis.hset(
            BREAKER_KEY.format(deployment.id), mapping={"state": "open", "opened_at": time.time()}
        )


CASES = {
    "ordered": ("summary", {}, nothing, "aimlapi/gpt-4o-mini"),
    "ordered, a breaker open": ("summary", {}, aimlapi_breaker_open, "openai/gpt-4o-mini"),
    "cheapest": ("sentiment", {}, nothing, "aimlapi/gpt-4o-mini"),
    "fastest, from real traffic": (
        "live_assist",
        {},
        aimlapi_slow_google_fast,
        "google/gemini-2.0-flash",
    ),
    "balanced, from real traffic": (
        "action_items",
        {},
        aimlapi_slow_google_fast,
        "google/gemini-2.0-flash",
    ),
    "balanced, by a rule's route": (
        "summary",
        {"meeting_type": "sales"},
        aimlapi_slow_google_fast,
        "google/gemini-2.0-flash",
    ),
    "the executive rule's route": (
        "summary",
        {"meeting_type": "executive"},
        nothing,
        "aimlapi/gpt-4o",
    ),
    "the executive rule's route, a breaker open": (
        "summary",
        {"meeting_type": "executive"},
        aimlapi_breaker_open,
        "anthropic/claude-3-5-haiku-latest",
    ),
    "a rule's long-context deployment": (
        "summary",
        {"transcript": "yes"},
        nothing,
        "aimlapi/gemini-1.5-pro",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_the_preview_names_the_deployment_that_then_answers(
    case: str,
    preview: Callable[..., Any],
    openai_client: openai.OpenAI,
    demo: SimulatorHandle,
    redis: Redis,
) -> None:
    model, metadata, setup, expected = CASES[case]
    messages = MESSAGES
    if metadata.pop("transcript", None):
        messages = [{"role": "user", "content": "Alice: the roadmap, at length. " * 3500}]
    if metadata.get("meeting_type") == "sales":
        RoutingRule.objects.create(name="sales", meeting_types=["sales"], route="action_items")
    setup(openai_client, demo, redis)
    body = {"model": model, "messages": messages, "metadata": metadata}

    shown = preview(body).json()
    raw = openai_client.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]

    answered = f"{raw.headers['x-switchboard-provider']}/{raw.headers['x-switchboard-model']}"
    assert shown["first"] == answered == expected
    drain_ledger()
    record = UsageRecord.objects.get(request_id=raw.headers["x-switchboard-request-id"])
    # The usage record carries the same explanation (live numbers aside, which moved on).
    assert record.decision["rule"] == shown["rule"]
    assert [c["deployment"] for c in record.decision["ranking"]["candidates"]] == [
        c["deployment"] for c in shown["ranking"]["candidates"]
    ]


def test_the_preview_reads_the_context_from_headers_like_the_gateway(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    response = httpx.post(
        f"{gateway}/api/v1/route/preview",
        json={"model": "summary", "messages": MESSAGES},
        headers={
            "Authorization": f"Bearer {client_key}",
            "X-Switchboard-Meeting-Type": "executive",
        },
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["context"]["meeting_type"] == "executive"
    assert shown["route"] == "executive"


def test_a_rule_cannot_take_a_key_past_the_models_it_may_use(
    gateway: str, demo: SimulatorHandle
) -> None:
    from routing.actions import create_client_key

    key, raw = create_client_key("summary-only", ["chat"])
    key.allowed_models = ["summary"]
    key.save()
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=raw, max_retries=0)

    answer = client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, metadata={"meeting_type": "executive"}
    )

    assert answer.headers["x-switchboard-route"] == "summary"
    drain_ledger()
    actions = UsageRecord.objects.get().decision["rule"]["actions"]
    assert {"skipped": "not among the models this key may use"}.items() <= actions[-1].items()
