"""The production layout of docs/deploy.md in small: two gateway processes and two RQ
workers sharing one database and one Redis. The gateways agree on breakers, rate limits,
budgets, the response cache and revocations, because all of it lives in Redis (or is
re-read from the database when the configuration version moves); queued work is done by
either worker, each job exactly once.

It runs on SQLite and the embedded Redis by default, and on PostgreSQL and the machine's
Redis when DATABASE_URL and REDIS_URL name them (CI).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import django_rq
import httpx
import openai
import pytest
from redis import Redis
from rq.job import Job, JobStatus

from billing.budgets import current_spend
from billing.ledger import LEDGER_KEY
from billing.models import Budget, UsageRecord
from routing.models import ClientKey
from tests.factories import make_client_key
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def chat(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, **extra
    )


def refusal(client: openai.OpenAI, **extra: Any) -> str:
    """The error code of a request that must be refused."""
    with pytest.raises(openai.APIStatusError) as refused:
        chat(client, **extra)
    return str(refused.value.code)


def set_key_limits(**limits: Any) -> None:
    key = ClientKey.objects.get(name="tests")
    for name, value in limits.items():
        setattr(key, name, value)
    key.save()  # bumps the configuration version: both gateways re-read their table


def wait_for_jobs(jobs: list[Job], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    for job in jobs:
        while job.get_status(refresh=True) != JobStatus.FINISHED:
            assert job.get_status() != JobStatus.FAILED, job.latest_result()
            assert time.monotonic() < deadline, f"job {job.id} not done in {seconds} s"
            time.sleep(0.05)


@pytest.mark.slow
def test_two_gateways_agree_on_breakers_limits_budgets_cache_and_revocation(
    two_gateways: list[str],
    two_workers: list[str],
    client_key: str,
    demo: SimulatorHandle,
    redis: Redis,
) -> None:
    first, second = (sdk(url, client_key) for url in two_gateways)

    # Breakers: the first provider fails for want of credit through the first gateway;
    # the second gateway no longer tries it.
    demo.fault(provider="aimlapi", mode="no_credit")
    assert chat(first).headers["x-switchboard-provider"] == "openai"
    aimlapi_calls = demo.count("aimlapi")
    answer = chat(second)
    assert answer.headers["x-switchboard-attempts"] == "1"
    assert demo.count("aimlapi") == aimlapi_calls

    # Rate limits: three requests a minute for the key, whichever gateway they reach.
    set_key_limits(rpm=3, burst=0)
    for client in (first, second, first):
        chat(client, temperature=0.5)
    assert refusal(second, temperature=0.5) == "rate_limit_exceeded"
    assert refusal(first, temperature=0.5) == "rate_limit_exceeded"
    set_key_limits(rpm=None)

    # Budgets: one hard budget, spent through both gateways, refused by both once spent
    # (a request reserves its worst case, many times its actual cost, before its call).
    cost = Decimal(chat(first, max_tokens=40, temperature=0.5).headers["x-switchboard-cost-usd"])
    budget = Budget.objects.create(
        scope="key", scope_ref="tests", period="monthly", amount_usd=cost * 60, hard=True
    )
    answered = 0
    clients = [first, second]
    for turn in range(100):
        try:
            chat(clients[turn % 2], max_tokens=40, temperature=0.5)
        except openai.RateLimitError as refused:
            assert refused.code == "budget_exceeded"
            break
        answered += 1
    assert answered >= 2, "both gateways should have spent from the budget"
    assert refusal(clients[(answered + 1) % 2], max_tokens=40, temperature=0.5) == (
        "budget_exceeded"
    )
    total, reserved = current_spend(redis, budget.info(), datetime.now(UTC))
    assert total == cost * answered and total <= budget.amount_usd and reserved == 0
    budget.delete()

    # The response cache: what the first gateway answered, the second serves from Redis.
    miss = chat(first, temperature=0)
    calls = demo.count("openai")
    hit = chat(second, temperature=0)
    assert (miss.headers["x-switchboard-cache"], hit.headers["x-switchboard-cache"]) == (
        "miss",
        "hit",
    )
    assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    assert demo.count("openai") == calls

    # Revocation through the first gateway's API holds on the second at once.
    admin_key = make_client_key(name="ops", scopes=["admin"])
    code = ClientKey.objects.get(name="tests").code
    with httpx.Client(trust_env=False) as http:
        revoked = http.post(
            f"{two_gateways[0]}/api/v1/keys/{code}/revoke",
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    assert revoked.status_code == 200
    for client in (second, first):
        with pytest.raises(openai.AuthenticationError):
            chat(client)
        client.close()


@pytest.mark.slow
def test_each_queued_job_runs_exactly_once_on_one_of_two_workers(
    two_workers: list[str], redis: Redis
) -> None:
    queue = django_rq.get_queue("default")

    jobs = [queue.enqueue("tests.e2e.jobs.count_run", number) for number in range(40)]
    wait_for_jobs(jobs)

    runs = [int(redis.get(f"sb:test:runs:{number}") or 0) for number in range(40)]
    assert runs == [1] * 40
    assert {job.return_value() for job in jobs} == set(two_workers)


@pytest.mark.slow
def test_the_ledger_written_by_two_gateways_is_drained_once_by_two_workers(
    two_gateways: list[str],
    two_workers: list[str],
    client_key: str,
    demo: SimulatorHandle,
    redis: Redis,
) -> None:
    clients = [sdk(url, client_key) for url in two_gateways]
    request_ids = {
        chat(clients[turn % 2], temperature=0.5).headers["x-switchboard-request-id"]
        for turn in range(12)
    }
    queue = django_rq.get_queue("default")

    # Four drains at once: both workers take some, and each entry lands once.
    wait_for_jobs([queue.enqueue("billing.jobs.drain_ledger") for _ in range(4)])

    assert redis.llen(LEDGER_KEY) == 0
    recorded = list(UsageRecord.objects.values_list("request_id", flat=True))
    assert sorted(recorded) == sorted(request_ids)
    for client in clients:
        client.close()
