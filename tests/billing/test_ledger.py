"""The usage ledger: durable in Redis first, drained to the database exactly once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from redis import Redis

from billing import ledger
from billing.ledger import UsageEntry
from billing.models import UsageRecord

pytestmark = pytest.mark.django_db


def entry(request_id: str, cost: str = "0.0000123456") -> UsageEntry:
    return UsageEntry(
        request_id=request_id,
        created=datetime(2026, 11, 27, 9, 30, tzinfo=UTC),
        status="ok",
        provider="aimlapi",
        model="gpt-4o-mini",
        prompt_tokens=120,
        completion_tokens=30,
        cost_usd=Decimal(cost),
        attempts=[{"provider": "aimlapi", "outcome": "ok"}],
    )


def test_entries_move_to_the_database_with_exact_decimal_cost(redis: Redis) -> None:
    redis.rpush(ledger.LEDGER_KEY, entry("r1").encode(), entry("r2", "1.5").encode())

    assert ledger.drain(redis) == 2

    assert ledger.pending(redis) == 0
    assert UsageRecord.objects.get(request_id="r1").cost_usd == Decimal("0.0000123456")
    assert UsageRecord.objects.get(request_id="r2").cost_usd == Decimal("1.5")


def test_an_entry_appended_twice_is_recorded_once(redis: Redis) -> None:
    redis.rpush(ledger.LEDGER_KEY, entry("r1").encode())
    ledger.drain(redis)
    redis.rpush(ledger.LEDGER_KEY, entry("r1", "9").encode())  # a re-delivered duplicate

    ledger.drain(redis)

    assert UsageRecord.objects.count() == 1
    assert UsageRecord.objects.get().cost_usd == Decimal("0.0000123456")


def test_drain_moves_large_backlogs_in_batches(redis: Redis) -> None:
    redis.rpush(ledger.LEDGER_KEY, *(entry(f"r{i}").encode() for i in range(25)))

    assert ledger.drain(redis, batch_size=10) == 25

    assert UsageRecord.objects.count() == 25


def test_an_unreadable_entry_is_kept_aside_not_lost(redis: Redis) -> None:
    redis.rpush(ledger.LEDGER_KEY, b"{not json", entry("r1").encode())

    ledger.drain(redis)

    assert UsageRecord.objects.count() == 1
    assert redis.lrange(ledger.DEAD_LETTER_KEY, 0, -1) == [b"{not json"]


def test_a_second_drainer_backs_off_while_one_holds_the_lock(redis: Redis) -> None:
    redis.rpush(ledger.LEDGER_KEY, entry("r1").encode())
    lock = redis.lock(ledger.DRAIN_LOCK_KEY, timeout=10)
    assert lock.acquire()

    assert ledger.drain(redis) == 0

    lock.release()
    assert ledger.drain(redis) == 1
