"""Strategies inside a route, and the demotions every strategy obeys.

The ranking itself is a pure function of the candidates and their live numbers
(`selection.order` and its explanation), tested first with numbers given; then through the live
gateway, with numbers made by real traffic to the simulator.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from billing.models import UsageRecord
from routing import live, selection
from routing.breaker import CLOSED, Reading, State
from routing.models import Deployment, Route
from routing.schema import ChatRequest
from routing.table import DeploymentInfo, RoutePolicy
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]
REQUEST = ChatRequest(model="r", messages=MESSAGES)
COOLDOWN = 30.0


def candidate(
    id: int, input_price: str = "1", output_price: str = "1", max_concurrency: int = 0
) -> DeploymentInfo:
    return DeploymentInfo(
        id=id,
        provider=f"p{id}",
        protocol="openai",
        base_url="http://127.0.0.1:9",
        model="m",
        api_key="k",
        vendor="",
        input_usd_per_mtok=Decimal(input_price),
        output_usd_per_mtok=Decimal(output_price),
        cached_input_usd_per_mtok=None,
        context_window=128_000,
        max_output_tokens=None,
        connect_timeout=1,
        read_timeout=1,
        max_concurrency=max_concurrency,
    )


def ranked(
    chain: list[DeploymentInfo],
    strategy: str,
    numbers: dict[int, live.Live] | None = None,
    readings: dict[int, Reading] | None = None,
    quality_floor: int | None = None,
    **snapshot: Any,
) -> tuple[list[int], dict[str, Any]]:
    result = selection.order(
        tuple(chain),
        RoutePolicy(strategy, quality_floor),
        live.Snapshot(numbers or {}, **snapshot),
        readings or {d.id: CLOSED for d in chain},
        REQUEST,
        COOLDOWN,
    )
    return [d.id for d in result.chain], result.explain()


def reasons(explanation: dict[str, Any]) -> list[str]:
    return [c["reason"] for c in explanation["candidates"]]


# -- each strategy, with numbers given -------------------------------------------------------


def test_ordered_keeps_the_chain_order_even_when_a_later_candidate_is_cheaper_and_faster() -> None:
    chain = [candidate(1, "5", "5"), candidate(2, "1", "1")]
    numbers = {1: live.Live(latency_ms=900), 2: live.Live(latency_ms=100)}

    order, explanation = ranked(chain, "ordered", numbers)

    assert order == [1, 2]
    assert reasons(explanation) == ["position 1 in the route", "position 2 in the route"]


def test_cheapest_puts_the_lowest_estimated_cost_for_this_request_first() -> None:
    order, explanation = ranked([candidate(1, "5", "5"), candidate(2, "1", "1")], "cheapest")

    assert order == [2, 1]
    first = explanation["candidates"][0]
    # 19 characters / 4 + 4 tokens a message = 8 prompt tokens, 256 output tokens assumed.
    assert first["estimated_cost_usd"] == "0.0002640000"
    assert first["reason"] == "estimated $0.0002640000 for this request"


def test_cheapest_counts_the_output_tokens_the_request_allows() -> None:
    # Cheap output but dear input wins a long answer; loses a short one.
    chain = [candidate(1, "0.1", "10"), candidate(2, "10", "0.1")]
    long_answer = ChatRequest(model="r", messages=MESSAGES, params={"max_tokens": 4000})
    short_answer = ChatRequest(model="r", messages=MESSAGES, params={"max_tokens": 1})
    snapshot = live.Snapshot({})
    readings = {1: CLOSED, 2: CLOSED}

    order_long = selection.order(
        tuple(chain), RoutePolicy("cheapest"), snapshot, readings, long_answer, COOLDOWN
    ).chain
    order_short = selection.order(
        tuple(chain), RoutePolicy("cheapest"), snapshot, readings, short_answer, COOLDOWN
    ).chain

    assert [d.id for d in order_long] == [2, 1]
    assert [d.id for d in order_short] == [1, 2]


def test_fastest_puts_the_lowest_latency_first_and_counts_the_unmeasured_as_the_median() -> None:
    chain = [candidate(1), candidate(2), candidate(3), candidate(4)]
    numbers = {
        1: live.Live(latency_ms=800),
        2: live.Live(latency_ms=200),
        4: live.Live(latency_ms=400),
    }

    order, explanation = ranked(chain, "fastest", numbers)

    assert order == [2, 3, 4, 1]  # 3 is unmeasured: the median, 400, and ahead of 4 in the chain
    assert reasons(explanation)[0] == "rolling latency 200 ms"
    assert reasons(explanation)[1] == "no latency measured lately: counted as the route's median"


def test_balanced_weighs_latency_cost_and_errors() -> None:
    fast_dear = candidate(1, "1", "1")
    slow_cheap = candidate(2, "0.1", "0.1")
    numbers = {
        1: live.Live(latency_ms=100),
        2: live.Live(latency_ms=1000, error_rate=0.5),
    }

    order, explanation = ranked([slow_cheap, fast_dear], "balanced", numbers)

    # fast_dear: 0.30 * 0.1 + 0.30 * 1 = 0.33; slow_cheap: 0.30 + 0.03 + 0.20 * 0.5 = 0.43.
    assert order == [1, 2]
    first, second = explanation["candidates"]
    assert first["score"] == pytest.approx(0.33)
    assert second["score"] == pytest.approx(0.43)
    assert second["parts"] == {
        "latency": 0.3,
        "cost": 0.03,
        "errors": 0.1,
        "quality": 0.0,
        "load": 0.0,
    }


def test_balanced_counts_load_and_quality() -> None:
    busy = candidate(1, max_concurrency=10)
    poor = candidate(2)
    numbers = {
        1: live.Live(latency_ms=100, in_flight=9, quality=Decimal(90)),
        2: live.Live(latency_ms=100, quality=Decimal(40)),
    }

    _, explanation = ranked([busy, poor], "balanced", numbers)

    parts = {c["deployment_id"]: c["parts"] for c in explanation["candidates"]}
    assert parts[1]["load"] == pytest.approx(0.09)
    assert parts[2]["quality"] == pytest.approx(0.06)


def test_budget_pressure_makes_balanced_favour_the_cheaper_candidate() -> None:
    fast_dear = candidate(1, "1", "1")
    slow_cheap = candidate(2, "0.4", "0.4")
    numbers = {1: live.Live(latency_ms=100), 2: live.Live(latency_ms=1000)}

    calm, _ = ranked([fast_dear, slow_cheap], "balanced", numbers)
    pressed, explanation = ranked(
        [fast_dear, slow_cheap],
        "balanced",
        numbers,
        budget_pressure=0.8,
        pressing_budget="global monthly",
    )

    assert calm == [1, 2]
    assert pressed == [2, 1]
    assert explanation["budget"] == {
        "label": "global monthly",
        "spent_share": 0.8,
        "cheapest_first": False,
    }


def test_a_budget_past_its_degrade_point_puts_the_cheapest_first_whatever_the_strategy() -> None:
    chain = [candidate(1, "5", "5"), candidate(2, "1", "1")]
    numbers = {1: live.Live(latency_ms=100), 2: live.Live(latency_ms=900)}

    order, explanation = ranked(
        chain, "fastest", numbers, degraded_by="route summary monthly", pressing_budget="x"
    )

    assert order == [2, 1]
    assert reasons(explanation)[0].startswith("budget pressure (route summary monthly)")


# -- the demotions, whatever the strategy ------------------------------------------------------


@pytest.mark.parametrize("strategy", ["ordered", "cheapest", "fastest", "balanced"])
def test_an_open_breaker_goes_last_until_its_cool_down_is_over(strategy: str) -> None:
    chain = [candidate(1, "0.1", "0.1"), candidate(2)]
    numbers = {1: live.Live(latency_ms=10), 2: live.Live(latency_ms=500)}
    opened_now = {1: Reading(State.OPEN, time.time()), 2: CLOSED}
    cooled = {1: Reading(State.OPEN, time.time() - COOLDOWN - 1), 2: CLOSED}

    order, explanation = ranked(chain, strategy, numbers, opened_now)
    assert order == [2, 1]
    assert reasons(explanation)[1].startswith("breaker open")

    assert ranked(chain, strategy, numbers, cooled)[0] == [1, 2]


@pytest.mark.parametrize("strategy", ["ordered", "cheapest", "fastest", "balanced"])
def test_a_deployment_at_its_concurrency_cap_spills_over_to_the_next(strategy: str) -> None:
    chain = [candidate(1, "0.1", "0.1", max_concurrency=2), candidate(2)]
    numbers = {1: live.Live(latency_ms=10, in_flight=2), 2: live.Live(latency_ms=500)}

    order, explanation = ranked(chain, strategy, numbers)

    assert order == [2, 1]
    assert reasons(explanation)[1] == (
        "at its concurrency cap (2/2 in flight): spills over to the next"
    )


def test_quality_below_the_floor_goes_after_the_rest_and_no_score_is_neutral() -> None:
    chain = [candidate(1), candidate(2), candidate(3)]
    numbers = {1: live.Live(quality=Decimal("41.5")), 2: live.Live(quality=Decimal(80))}

    order, explanation = ranked(chain, "ordered", numbers, quality_floor=60)

    assert order == [2, 3, 1]
    assert reasons(explanation)[2] == "quality 41.5 below the route's floor of 60"


# -- through the gateway: numbers from real traffic ------------------------------------------


def ask(client: openai.OpenAI, model: str, **metadata: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
        metadata=metadata or None,  # type: ignore[arg-type]
    )


def answered_by(raw: Any) -> str:
    return f"{raw.headers['x-switchboard-provider']}/{raw.headers['x-switchboard-model']}"


def test_sentiment_is_answered_by_its_cheapest_candidate_not_its_first(
    openai_client: openai.OpenAI,
) -> None:
    raw = ask(openai_client, "sentiment")

    assert answered_by(raw) == "aimlapi/gpt-4o-mini"  # google/gemini-2.0-flash is first
    drain_ledger()
    ranking = UsageRecord.objects.get().decision["ranking"]
    assert ranking["strategy"] == "cheapest"
    assert [c["deployment"] for c in ranking["candidates"]][:2] == [
        "aimlapi/gpt-4o-mini",
        "google/gemini-2.0-flash",
    ]
    assert all(Decimal(c["estimated_cost_usd"]) > 0 for c in ranking["candidates"])


def make_aimlapi_slow_and_measure(client: openai.OpenAI, demo: SimulatorHandle) -> None:
    """Real traffic: AIMLAPI answers in 300 ms or more, Google at once."""
    demo.fault(provider="aimlapi", mode="slow", delay_ms=300)
    ask(client, "aimlapi/gpt-4o-mini")
    demo.clear()
    ask(client, "google/gemini-2.0-flash")


def test_live_assist_is_answered_by_the_fastest_deployment_measured_on_real_traffic(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    make_aimlapi_slow_and_measure(openai_client, demo)

    raw = ask(openai_client, "live_assist")

    assert answered_by(raw) == "google/gemini-2.0-flash"
    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    assert float(redis.hget(live.KEY.format(aimlapi.id), "lat")) >= 300


def test_the_rolling_numbers_are_shared_by_every_gateway_process(
    two_gateways: list[str], demo: SimulatorHandle
) -> None:
    from tests.factories import make_client_key

    key = make_client_key()
    first, second = (
        openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) for url in two_gateways
    )
    with first, second:
        make_aimlapi_slow_and_measure(first, demo)

        raw = ask(second, "live_assist")

    assert answered_by(raw) == "google/gemini-2.0-flash"


def test_the_error_rate_rises_with_failures_and_falls_with_successes(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    demo.fault(provider="aimlapi", mode="error", status=500, times=1)
    ask(openai_client, "summary")  # AIMLAPI fails once, then answers its retry
    after_failure = float(redis.hget(live.KEY.format(aimlapi.id), "err"))

    ask(openai_client, "summary")

    assert after_failure == pytest.approx(0.5)  # one failure, one success: both count fully
    assert float(redis.hget(live.KEY.format(aimlapi.id), "err")) == pytest.approx(1 / 3)


def test_a_deployment_below_the_routes_quality_floor_is_tried_after_the_others(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    Route.objects.filter(name="summary").update(quality_floor=60)
    Route.objects.get(name="summary").save()  # bumps the table version
    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    redis.hset(live.QUALITY_KEY, str(aimlapi.id), "41.5")

    raw = ask(openai_client, "summary")

    assert answered_by(raw) == "openai/gpt-4o-mini"
    drain_ledger()
    last = UsageRecord.objects.get().decision["ranking"]["candidates"][-1]
    assert last["reason"] == "quality 41.5 below the route's floor of 60"


def test_a_request_spills_over_when_the_first_deployment_is_at_its_concurrency_cap(
    openai_client: openai.OpenAI, demo: SimulatorHandle, gateway: str, client_key: str
) -> None:
    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    aimlapi.max_concurrency = 1
    aimlapi.save()
    demo.fault(provider="aimlapi", mode="slow", delay_ms=1500)
    answers: list[Any] = []

    def slow_one() -> None:
        answers.append(ask(openai_client, "summary"))

    holder = threading.Thread(target=slow_one)
    holder.start()
    deadline = time.monotonic() + 5
    while demo.count("aimlapi") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # until the first request holds AIMLAPI's one slot
    spilled = ask(openai_client, "summary")
    holder.join()

    assert answered_by(answers[0]) == "aimlapi/gpt-4o-mini"
    assert answered_by(spilled) == "openai/gpt-4o-mini"
    assert demo.count("aimlapi") == 1  # the spilled request never reached it
    drain_ledger()
    record = UsageRecord.objects.get(request_id=spilled.headers["x-switchboard-request-id"])
    assert [a["provider"] for a in record.attempts] == ["openai"]
    last = record.decision["ranking"]["candidates"][-1]
    assert last["deployment"] == "aimlapi/gpt-4o-mini"
    assert last["reason"] == "at its concurrency cap (1/1 in flight): spills over to the next"
    # Both slots are given back: the next request finds AIMLAPI free again.
    demo.clear()
    assert answered_by(ask(openai_client, "summary")) == "aimlapi/gpt-4o-mini"
    with httpx.Client() as http:
        preview = http.post(
            f"{gateway}/api/v1/route/preview",
            json={"model": "summary", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {client_key}"},
        ).json()
    assert preview["ranking"]["candidates"][0]["live"]["in_flight"] == 0


def test_concurrent_requests_never_put_more_than_the_cap_on_a_deployment(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    aimlapi.max_concurrency = 2
    aimlapi.save()
    demo.fault(provider="aimlapi", mode="slow", delay_ms=1000)
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda: answers.append(ask(openai_client, "summary")))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    providers = sorted(a.headers["x-switchboard-provider"] for a in answers)
    assert len(providers) == 6
    assert providers.count("aimlapi") == 2 == demo.count("aimlapi")


def test_a_slot_whose_process_died_is_free_when_its_lease_ends(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    from routing.limits import deployment_buckets

    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    aimlapi.max_concurrency = 1
    aimlapi.save()
    credential = aimlapi.provider.credentials.get(environment="prod")
    info = candidate(aimlapi.id)
    slots = deployment_buckets(DeploymentInfo(**{**info.__dict__, "credential_id": credential.id}))[
        2
    ]
    redis.zadd(slots, {"a-request-of-a-dead-process": int(time.time() * 1000) - 1})

    assert answered_by(ask(openai_client, "summary")) == "aimlapi/gpt-4o-mini"


def test_a_warm_request_through_rules_and_a_balanced_route_makes_no_database_query(
    demo: SimulatorHandle, client_key: str
) -> None:
    from django.db import connection
    from django.db.backends.signals import connection_created

    from routing.client import EnhancedHybridAIClient, forget_cached_state
    from tests.routing.test_client import QueryCounter

    counter = QueryCounter()
    connection_created.connect(counter.install)
    connection.close()
    try:
        client = EnhancedHybridAIClient(key=client_key)
        forget_cached_state()
        body = {"model": "summary", "messages": MESSAGES, "metadata": {"meeting_type": "executive"}}
        client.complete(**body)
        assert counter.count > 0, "the cold request read the routing table (the counter works)"
        counter.count = 0

        for _ in range(5):
            answer = client.complete(**body)

        assert counter.count == 0
        assert answer["model"] == "gpt-4o"
    finally:
        connection_created.disconnect(counter.install)


def test_an_ordered_route_without_floor_caps_or_budgets_reads_no_live_numbers(
    openai_client: openai.OpenAI,
) -> None:
    from billing.models import Budget

    for budget in Budget.objects.all():
        budget.delete()  # one by one: each delete bumps the table version

    ask(openai_client, "summary")
    ask(openai_client, "sentiment")

    drain_ledger()
    read = {r.route: r.decision["ranking"]["live_read"] for r in UsageRecord.objects.all()}
    assert read == {"summary": False, "sentiment": True}
