"""Allowances: a gateway process admits from slices of the shared limits, never past them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import openai
import pytest
from redis import Redis

from billing import budgets
from billing.budgets import (
    BudgetInfo,
    current_spend,
    from_units,
    reserve_args,
    reserved_split,
    to_units,
)
from billing.models import Budget, UsageRecord
from routing import limits
from routing.allowances import SLOT_LIVES, Allowances, AllowanceSettings
from routing.models import ClientKey
from routing.table import KeyInfo
from tests.factories import drain_ledger
from tests.routing.test_metrics import delta, scrape
from tests.routing.test_rate_limits import burst, limit_key, route
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]
KEY = KeyInfo(7, "team", frozenset({"chat"}), "prod", rpm=600, tpm=60_000, max_concurrent=100)


def run_script(redis: Redis, scripts: dict[str, str], sha: str, *args: Any) -> Any:
    return redis.execute_command("EVAL", scripts[sha], *args)


def grant(
    redis: Redis,
    requests: int,
    tokens: int,
    slots: int,
    held: int = 0,
    lives_ms: int = 3000,
    fewest_requests: int = 1,
    held_requests: int = 0,
) -> list[Any]:
    return run_script(
        redis,
        limits.SCRIPTS,
        limits.GRANT_SHA,
        3,
        *limits.key_buckets(KEY),
        KEY.rpm,
        0,
        KEY.tpm,
        KEY.max_concurrent,
        requests,
        tokens,
        slots,
        held,
        20,
        "a:test:k7:1",
        lives_ms,
        120_000,
        1,
        fewest_requests,
        held_requests,
        0,
    )


def give_back(redis: Redis, requests: int, tokens: int, slots: int) -> None:
    run_script(
        redis,
        limits.SCRIPTS,
        limits.GIVE_BACK_SHA,
        3,
        *limits.key_buckets(KEY),
        KEY.rpm,
        0,
        KEY.tpm,
        requests,
        tokens,
        "a:test:k7:1",
        slots,
    )


def level(redis: Redis, bucket: str) -> float:
    return float(redis.hget(bucket, "level") or 0)


# -- the scripts, against the real Redis ------------------------------------------------


def test_a_grant_takes_a_slice_of_every_limit_of_the_key_at_once(redis: Redis) -> None:
    requests_key, tokens_key, slots_key = limits.key_buckets(KEY)

    reply = grant(redis, requests=10, tokens=1_000, slots=2)

    assert reply[0] == 1
    assert reply[1] == 590 and reply[3] == 59_000  # what is left for everyone else
    assert level(redis, requests_key) == pytest.approx(590, abs=1)
    assert level(redis, tokens_key) == pytest.approx(59_000, abs=20)
    assert redis.zcard(slots_key) == 2


def test_a_slice_is_at_most_a_twentieth_of_what_each_limit_has_left(redis: Redis) -> None:
    requests_key, _, slots_key = limits.key_buckets(KEY)

    assert grant(redis, requests=100, tokens=0, slots=0)[5] == 30  # 600 / 20
    assert grant(redis, requests=100, tokens=0, slots=0)[5] == 28  # 570 / 20, rounded down
    assert grant(redis, requests=0, tokens=0, slots=5)[0] == 1, "100 free slots hold 20 of 5"
    assert grant(redis, requests=0, tokens=0, slots=6, held=5)[0] == 1
    assert grant(redis, requests=0, tokens=0, slots=11, held=6)[0] == 0, "89 do not hold 100"

    assert level(redis, requests_key) == pytest.approx(542, abs=1)
    assert redis.zcard(slots_key) == 6


def test_a_renewal_tops_the_allowance_up_to_one_slice_and_never_holds_more(
    redis: Redis,
) -> None:
    requests_key, _, _ = limits.key_buckets(KEY)

    assert grant(redis, requests=10, tokens=0, slots=0)[5] == 10
    assert grant(redis, requests=10, tokens=0, slots=0, held_requests=7)[5] == 3
    assert grant(redis, requests=10, tokens=0, slots=0, held_requests=10)[5] == 0

    assert level(redis, requests_key) == pytest.approx(587, abs=1)


def test_an_allowance_stops_renewing_when_it_holds_more_than_a_twentieth_of_what_is_left(
    redis: Redis,
) -> None:
    requests_key, _, _ = limits.key_buckets(KEY)
    redis.hset(requests_key, mapping={"level": 300, "at": int(time.time() * 1000)})

    refused = grant(redis, requests=20, tokens=0, slots=0, held_requests=16)  # 300 / 20 = 15

    assert refused[0] == 0 and refused[5] == 0
    assert level(redis, requests_key) == pytest.approx(300, abs=1)


def test_an_old_allowance_is_not_renewed_so_a_fresh_id_replaces_it() -> None:
    from routing.allowances import ROTATE_SECONDS, KeyAllowance

    allowance = KeyAllowance(id="a:test:k7:1")
    now = time.monotonic()

    assert allowance.wants_renewal(8, 0, now, AllowanceSettings())
    allowance.born = now - ROTATE_SECONDS - 1
    assert not allowance.wants_renewal(8, 0, now, AllowanceSettings())


def test_near_the_limit_a_grant_is_refused_and_takes_nothing(redis: Redis) -> None:
    requests_key, _, _ = limits.key_buckets(KEY)
    redis.hset(requests_key, mapping={"level": 19, "at": int(time.time() * 1000)})

    refused = grant(redis, requests=8, tokens=0, slots=0)

    assert refused[0] == 0 and refused[5] == 0
    assert level(redis, requests_key) == pytest.approx(19, abs=1)


def test_a_grant_smaller_than_the_fewest_worth_granting_is_refused(redis: Redis) -> None:
    requests_key, _, _ = limits.key_buckets(KEY)
    redis.hset(requests_key, mapping={"level": 150, "at": int(time.time() * 1000)})

    # 150 requests left hold slices of 7 at most: fewer than the 8 worth a grant.
    assert grant(redis, requests=100, tokens=0, slots=0, fewest_requests=8)[0] == 0
    assert grant(redis, requests=100, tokens=0, slots=0, fewest_requests=7)[5] == 7


def test_an_allowances_slots_expire_unless_renewed_so_a_dead_process_frees_them(
    redis: Redis,
) -> None:
    _, _, slots_key = limits.key_buckets(KEY)

    assert grant(redis, requests=0, tokens=0, slots=3, lives_ms=3000)[0] == 1

    now_ms = time.time() * 1000
    scores = [score for _, score in redis.zrange(slots_key, 0, -1, withscores=True)]
    assert len(scores) == 3
    lives_ms = SLOT_LIVES * AllowanceSettings().seconds * 1000
    assert all(now_ms < float(score) <= now_ms + lives_ms + 50 for score in scores)


def test_giving_back_returns_the_unused_requests_and_tokens_and_frees_the_slots(
    redis: Redis,
) -> None:
    requests_key, tokens_key, slots_key = limits.key_buckets(KEY)
    grant(redis, requests=10, tokens=1_000, slots=2)

    give_back(redis, requests=4, tokens=400, slots=2)

    assert level(redis, requests_key) == pytest.approx(594, abs=1)
    assert level(redis, tokens_key) == pytest.approx(59_400, abs=20)
    assert redis.zcard(slots_key) == 0


def test_giving_back_a_debt_takes_the_tokens_used_beyond_the_estimates(redis: Redis) -> None:
    _, tokens_key, _ = limits.key_buckets(KEY)
    grant(redis, requests=0, tokens=1_000, slots=0)

    give_back(redis, requests=0, tokens=-300, slots=0)

    assert level(redis, tokens_key) == pytest.approx(58_700, abs=20)


def test_a_request_ending_after_its_allowance_lapsed_is_settled_in_redis() -> None:
    from routing.allowances import KeyAllowance

    allowance = KeyAllowance(id="a:test:k7:1", limits=(600, 0, 60_000, 100), tokens=500)
    allowance.expires = time.monotonic() + 1
    allowance.tickets["live"] = allowance.tickets["late"] = time.monotonic() + 120

    assert allowance.settle("live", 100, 40) is True
    assert allowance.tokens == 560 and "live" not in allowance.tickets
    allowance.expires = 0.0  # lapsed: what it held went back to Redis
    assert allowance.settle("late", 100, 40) is False
    assert "late" not in allowance.tickets


BUDGET = BudgetInfo(3, "global monthly", "global", "", "monthly", Decimal("10"), hard=True)


def budget_grant(
    redis: Redis,
    amount: Decimal,
    held: Decimal = Decimal(0),
    fewest: Decimal = Decimal("0.01"),
    holder: str = "a:test:b3:1",
) -> tuple[int, Decimal]:
    """(granted, what it took)."""
    now = time.time()
    granted, taken = run_script(
        redis,
        budgets.SCRIPTS,
        budgets.GRANT_SHA,
        1,
        BUDGET.key(datetime.now(UTC)),
        holder,
        now,
        now + budgets.LEASE_SECONDS,
        86400,
        to_units(BUDGET.amount_usd),
        to_units(amount),
        20,
        to_units(fewest),
        to_units(held),
    )
    return int(granted), from_units(int(taken))


def test_a_budget_allowance_is_held_like_a_reservation_and_topped_up_to_a_twentieth(
    redis: Redis,
) -> None:
    now = datetime.now(UTC)

    assert budget_grant(redis, Decimal("0.6")) == (1, Decimal("0.5"))  # $10 / 20
    # Renewed after using 0.3 of it: topped up to $9.50 / 20, no further.
    assert budget_grant(redis, Decimal("0.6"), held=Decimal("0.2")) == (1, Decimal("0.275"))
    # It holds 0.475; $9.225 left holds 0.46125: no renewal, it lapses and hands back.
    assert budget_grant(redis, Decimal("0.6"), held=Decimal("0.475")) == (0, Decimal(0))

    assert reserved_split(redis, BUDGET, now) == (Decimal(0), Decimal("0.775"))
    assert redis.hget(BUDGET.key(now), "reserved") == str(to_units(Decimal("0.775"))).encode()
    # Neither spent nor in flight: any request may still use it.
    assert current_spend(redis, BUDGET, now) == (Decimal(0), Decimal(0))


def test_settling_a_request_from_an_allowance_releases_its_worst_case_and_adds_its_cost(
    redis: Redis,
) -> None:
    now = datetime.now(UTC)
    budget_grant(redis, Decimal("0.4"))
    planned, _ = reserve_args([BUDGET], "request-1", Decimal("0.1"), now)
    taken = budgets.AllowanceReservation(
        planned.request_id,
        planned.keys,
        planned.budgets,
        planned.ttl_seconds,
        (("a:test:b3:1", to_units(Decimal("0.1"))),),
    )

    redis.execute_command("EVAL", budgets.SETTLE_ALLOWANCE, *taken.settle_args(Decimal("0.03"))[1:])

    assert reserved_split(redis, BUDGET, now) == (Decimal(0), Decimal("0.3"))
    assert current_spend(redis, BUDGET, now)[0] == Decimal("0.03")
    run_script(
        redis,
        budgets.SCRIPTS,
        budgets.GIVE_BACK_SHA,
        1,
        BUDGET.key(now),
        "a:test:b3:1",
        to_units(Decimal("0.3")),
    )
    assert reserved_split(redis, BUDGET, now) == (Decimal(0), Decimal(0))
    assert redis.hlen(f"{BUDGET.key(now)}:held") == 0


# -- one process's allowances ------------------------------------------------------------


def test_after_a_grant_requests_are_admitted_from_memory_until_the_slice_is_used(
    redis: Redis,
) -> None:
    from routing.client import close_engine, current_engine

    async def admit_many() -> list[limits.Admission | None]:
        try:
            engine = current_engine()
            allowances = Allowances(engine.breakers.evalsha, AllowanceSettings(min_requests=8))
            first = allowances.admit_key(KEY, "r0", 50)  # none yet: asks for one
            await allowances.granted()
            rest = []
            for i in range(1, 40):  # one after the other: each ends before the next
                rest.append(admission := allowances.admit_key(KEY, f"r{i}", 50))
                if admission is not None and admission.lease:
                    assert admission.lease.settle_locally is not None
                    assert admission.lease.settle_locally(50), "settled in memory"

            await allowances.close()
            return [first, *rest]
        finally:
            await close_engine()

    admissions = asyncio.run(admit_many())

    assert admissions[0] is None, "the first request is admitted exactly"
    granted = next(i for i, a in enumerate(admissions[1:], 1) if a is None) - 1
    assert granted >= 8, "at least the smallest slice"
    assert all(a is not None and a.lease for a in admissions[1 : granted + 1])
    requests_key, _, slots_key = limits.key_buckets(KEY)
    # Handed back at close: Redis has only what the exact and the admitted requests took.
    assert level(redis, requests_key) == pytest.approx(600 - granted, abs=1)
    assert redis.zcard(slots_key) == 0


# -- through gateways ---------------------------------------------------------------------


def answered(results: list[object]) -> list[object]:
    return [r for r in results if not isinstance(r, Exception)]


@pytest.mark.slow
def test_two_gateways_admitting_from_allowances_never_pass_the_keys_rate_limit(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle, redis: Redis
) -> None:
    limit_key(rpm=300, burst=0)
    started = time.monotonic()

    # One request at a time on each gateway first: each takes an allowance meanwhile
    # (a burst alone may spend the limit before the first grant is back, on a busy machine).
    results: list[object] = []
    for _ in range(10):
        results += asyncio.run(burst(two_gateways, client_key, 2, max_tokens=40))
    results += asyncio.run(burst(two_gateways, client_key, 420, max_tokens=40))
    results += asyncio.run(burst(two_gateways, client_key, 60, max_tokens=40))
    elapsed = time.monotonic() - started

    refill = 300 / 60 * elapsed
    assert len(answered(results)) <= 300 + refill
    assert len(answered(results)) >= 300 - 20 * 8 * 2, "allowances only hold near the limit"
    refused = {getattr(r, "code", r) for r in results if isinstance(r, Exception)}
    assert refused == {"rate_limit_exceeded"}
    drain_ledger()
    from_allowances = UsageRecord.objects.filter(decision__admitted="allowance").count()
    assert from_allowances > 0, "the allowances served"


@pytest.mark.slow
def test_two_gateways_admitting_from_allowances_never_overspend_a_budget(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle, redis: Redis
) -> None:
    # "notes": AIMLAPI's gpt-4o-mini alone, so that a request's worst case (what a budget
    # holds back for it) is a few times its cost, not the dearest candidate's.
    route("notes", "aimlapi/gpt-4o-mini")
    first = openai.OpenAI(base_url=f"{two_gateways[0]}/v1", api_key=client_key, max_retries=0)
    raw = first.chat.completions.with_raw_response.create(
        model="notes", messages=MESSAGES, max_tokens=40
    )
    cost = Decimal(raw.headers["x-switchboard-cost-usd"])  # before the budget exists
    # Allowances serve while 160 worst cases fit (a worst case is a few costs here), then
    # each request is reserved exactly until the budget is spent.
    budget = Budget.objects.create(
        scope="key",
        scope_ref=ClientKey.objects.get().name,
        period="monthly",
        amount_usd=cost * 1000,
        hard=True,
    )
    # Each gateway's first request asks for an allowance, its second is admitted from it.
    # (Asked for in mid-burst, an allowance may find too little left beside the burst's
    # exact reservations, and then there is none.)
    warm_up = 0
    for url in two_gateways:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
        for _ in range(2):
            sdk.chat.completions.create(model="notes", messages=MESSAGES, max_tokens=40)
            warm_up += 1
    drain_ledger()
    assert UsageRecord.objects.filter(decision__admitted="allowance").count() == 2

    results = asyncio.run(burst(two_gateways, client_key, 1300, model="notes", max_tokens=40))

    now = datetime.now(UTC)
    spent, in_flight = current_spend(redis, budget.info(), now)
    assert warm_up + len(answered(results)) <= 1000
    assert spent <= budget.amount_usd
    assert spent == cost * (warm_up + len(answered(results)))
    refused = {getattr(r, "code", r) for r in results if isinstance(r, Exception)}
    assert refused == {"budget_exceeded"}, "the burst spent the budget"
    assert in_flight == 0, "no request holds anything"
    drain_ledger()
    ledger = sum(r.cost_usd for r in UsageRecord.objects.filter(status="ok"))
    assert ledger == spent + cost  # the first request came before the budget
    # What the allowances did not use goes back once they lapse.
    deadline = time.monotonic() + 5
    while reserved_split(redis, budget.info(), now)[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reserved_split(redis, budget.info(), now) == (Decimal(0), Decimal(0))
    assert redis.hget(budget.info().key(now), "reserved") in (None, b"0")


def test_every_request_admitted_from_an_allowance_frees_its_slot_streams_too(
    gateway: str, client_key: str, demo: SimulatorHandle
) -> None:
    import httpx

    from routing.client import _engines

    key = ClientKey.objects.get()
    key.rpm, key.max_concurrent = 100_000, 1_000
    key.save()
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=client_key, max_retries=0)
    body = {"model": "summary", "messages": MESSAGES, "max_tokens": 40}
    before = scrape(gateway)

    for _ in range(12):
        client.chat.completions.create(**body)  # type: ignore[call-overload]
        for _ in client.chat.completions.create(**body, stream=True):  # type: ignore[call-overload]
            pass
        headers = {"Authorization": f"Bearer {client_key}"}
        with httpx.stream(  # abandoned after its first event
            "POST", f"{gateway}/v1/chat/completions", json={**body, "stream": True}, headers=headers
        ) as response:
            next(response.iter_lines())

    drain_ledger()
    from_allowances = UsageRecord.objects.filter(decision__admitted="allowance").count()
    assert from_allowances > 12
    counted = delta(scrape(gateway), before, "switchboard_allowance_admissions_total", "route")
    assert counted == {("summary",): from_allowances}, "the metric counts what the ledger says"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        held = [
            ticket
            for engine in _engines.values()
            for allowance in list(engine.allowances._keys.values())
            for ticket in allowance.tickets
        ]
        if not held:
            break
        time.sleep(0.05)
    assert held == [], "a request still holds its slot"
