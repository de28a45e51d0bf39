"""Circuit breakers: shared in Redis, skipping open deployments, trying them when all are open."""

from __future__ import annotations

import time

import openai
import pytest
from redis import Redis

from billing.ledger import LEDGER_KEY
from routing import live
from routing.breaker import KEY, TRANSITIONS_KEY
from routing.engine import Answer
from routing.jobs import persist_breaker_transitions
from routing.models import BreakerEvent, Deployment, Route
from tests.factories import answer_in_process
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def aimlapi_id() -> int:
    return Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini").id


def state(redis: Redis, deployment_id: int) -> str:
    value = redis.hget(KEY.format(deployment_id), "state")
    return value.decode() if value else "closed"


def ask(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES)
    return raw.headers["x-switchboard-provider"]


def test_it_opens_after_consecutive_failures_and_then_skips_the_deployment(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    demo.fault(provider="aimlapi", mode="error", status=500)
    for _ in range(3):  # two calls each (one retry): five failures open it
        assert ask(openai_client) == "openai"
    assert state(redis, aimlapi_id()) == "open"
    calls_before = demo.count("aimlapi")

    assert ask(openai_client) == "openai"

    assert demo.count("aimlapi") == calls_before, "an open breaker is not called"


def test_a_permanent_failure_opens_it_at_once(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    demo.fault(provider="aimlapi", mode="no_credit")

    assert ask(openai_client) == "openai"

    assert state(redis, aimlapi_id()) == "open"


def test_after_the_cool_down_one_trial_call_closes_it_on_success(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    demo.fault(provider="aimlapi", mode="no_credit", times=1)
    assert ask(openai_client) == "openai"
    deployment = aimlapi_id()
    redis.hset(KEY.format(deployment), "opened_at", time.time() - 31)  # cool-down over

    assert ask(openai_client) == "aimlapi"

    assert state(redis, deployment) == "closed"
    persist_breaker_transitions()
    transitions = [
        (e.from_state, e.to_state) for e in BreakerEvent.objects.order_by("created", "id")
    ]
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_success_on_a_closed_breaker_is_recorded_just_after_its_answer_is_delivered(
    demo: SimulatorHandle, redis: Redis
) -> None:
    deployment = aimlapi_id()

    def calls() -> int:
        return int(redis.hget(live.KEY.format(deployment), "n") or 0)

    seen: list[tuple[int, int]] = []

    async def deliver(answer: Answer) -> None:
        seen.append((redis.llen(LEDGER_KEY), calls()))

    answer_in_process(deliver, times=2)

    # Each answer is in the ledger when its client gets it; its call is counted just after.
    assert seen == [(1, 0), (2, 1)]
    assert calls() == 2
    assert int(redis.hget(KEY.format(deployment), "win_total") or 0) == 2


def test_a_success_whose_client_went_away_is_still_recorded(
    demo: SimulatorHandle, redis: Redis
) -> None:
    async def deliver(answer: Answer) -> None:
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        answer_in_process(deliver)

    assert int(redis.hget(live.KEY.format(aimlapi_id()), "n") or 0) == 1


def test_a_trial_calls_success_closes_the_breaker_before_its_answer_is_delivered(
    demo: SimulatorHandle, redis: Redis
) -> None:
    deployment = aimlapi_id()
    redis.hset(KEY.format(deployment), mapping={"state": "open", "opened_at": time.time() - 31})
    seen: list[tuple[str, str]] = []

    async def deliver(answer: Answer) -> None:
        seen.append((answer.provider, state(redis, deployment)))

    answer_in_process(deliver)

    assert seen == [("aimlapi", "closed")]


def test_a_failed_trial_call_opens_it_again(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    demo.fault(provider="aimlapi", mode="no_credit")
    assert ask(openai_client) == "openai"
    deployment = aimlapi_id()
    redis.hset(KEY.format(deployment), "opened_at", time.time() - 31)

    assert ask(openai_client) == "openai"

    assert state(redis, deployment) == "open"
    assert float(redis.hget(KEY.format(deployment), "opened_at")) > time.time() - 5


def test_when_every_breaker_is_open_it_still_tries_them(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Redis
) -> None:
    demo.fault(provider="*", mode="error", status=403, times=4)  # e.g. out of credit
    with pytest.raises(openai.InternalServerError):
        ask(openai_client)
    assert {state(redis, d.id) for d in Route.objects.get(name="summary").chain()} == {"open"}

    assert ask(openai_client) == "aimlapi", "tried anyway, and aimlapi had recovered"


def test_a_high_failure_rate_opens_it_without_consecutive_failures(
    demo: SimulatorHandle, redis: Redis, transactional_db: None
) -> None:
    import asyncio

    from routing.breaker import Breakers, Policy

    policy = Policy(
        consecutive_failures=100,
        failure_rate=0.5,
        min_volume=10,
        window_seconds=60,
        cooldown_seconds=30,
    )

    async def alternate() -> None:
        from project.redis import async_client, close_async_client

        breakers = Breakers(async_client(), policy)
        for index in range(10):
            await breakers.record(7, "fail" if index % 2 else "ok", "test")
        await close_async_client()

    asyncio.run(alternate())

    assert state(redis, 7) == "open"
    assert redis.llen(TRANSITIONS_KEY) == 1


def test_a_breaker_another_process_opens_is_honoured_within_the_read_cache_time(
    redis: Redis, transactional_db: None
) -> None:
    import asyncio

    from project.redis import async_client, close_async_client
    from routing.breaker import Breakers, Policy, State

    policy = Policy(
        consecutive_failures=5,
        failure_rate=0.5,
        min_volume=20,
        window_seconds=60,
        cooldown_seconds=30,
        read_cache_seconds=0.2,
    )

    async def scenario() -> list[State]:
        here, elsewhere = Breakers(async_client(), policy), Breakers(async_client(), policy)
        seen = [(await here.read([9]))[9].state]
        await elsewhere.record(9, "fatal", "no credit")
        seen.append((await here.read([9]))[9].state)  # still the cached reading
        await asyncio.sleep(0.25)
        seen.append((await here.read([9]))[9].state)
        await close_async_client()
        return seen

    assert asyncio.run(scenario()) == [State.CLOSED, State.CLOSED, State.OPEN]


def _policy() -> object:
    from routing.breaker import Policy

    return Policy(
        consecutive_failures=100,
        failure_rate=0.5,
        min_volume=10,
        window_seconds=60,
        cooldown_seconds=30,
        read_cache_seconds=0,
    )


def test_a_recovered_breaker_does_not_reopen_on_its_first_failure(
    redis: Redis, transactional_db: None
) -> None:
    import asyncio

    from project.redis import async_client, close_async_client
    from routing.breaker import Breakers

    async def scenario() -> str:
        breakers = Breakers(async_client(), _policy())  # type: ignore[arg-type]
        for index in range(10):
            await breakers.record(3, "fail" if index % 2 else "ok", "test")
        redis.hset(KEY.format(3), "opened_at", time.time() - 31)
        assert await breakers.acquire_trial(3)
        await breakers.record(3, "ok")
        await breakers.record(3, "fail", "one blip")
        await close_async_client()
        return state(redis, 3)

    assert asyncio.run(scenario()) == "closed"


def test_a_success_from_a_call_started_before_the_breaker_opened_does_not_close_it(
    redis: Redis, transactional_db: None
) -> None:
    import asyncio

    from project.redis import async_client, close_async_client
    from routing.breaker import Breakers

    async def scenario() -> str:
        breakers = Breakers(async_client(), _policy())  # type: ignore[arg-type]
        started = time.time()
        await breakers.record(4, "fatal", "no credit")
        await breakers.record(4, "ok", started_at=started - 1)
        await close_async_client()
        return state(redis, 4)

    assert asyncio.run(scenario()) == "open"


def test_only_one_process_gets_the_trial_call(redis: Redis, transactional_db: None) -> None:
    import asyncio

    from project.redis import async_client, close_async_client
    from routing.breaker import Breakers

    async def scenario() -> list[bool]:
        processes = [Breakers(async_client(), _policy()) for _ in range(5)]  # type: ignore[arg-type]
        await processes[0].record(5, "fatal", "no credit")
        redis.hset(KEY.format(5), "opened_at", time.time() - 31)
        grants = await asyncio.gather(*(b.acquire_trial(5) for b in processes))
        await close_async_client()
        return list(grants)

    assert sorted(asyncio.run(scenario())) == [False, False, False, False, True]
