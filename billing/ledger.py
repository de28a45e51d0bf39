"""Durable usage records: appended to a Redis list on the request path, drained
to the database in batches by a worker.

The gateway appends before its response completes, so a crash after that loses
nothing; the drain is idempotent (rows are unique on request id and inserted
with ``ignore_conflicts``), so a drain that dies between insert and trim only
re-inserts rows the database already refuses.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import DatabaseError, transaction
from redis import Redis
from redis.exceptions import LockError

from billing.models import UsageRecord

log = logging.getLogger(__name__)

LEDGER_KEY = "sb:ledger"
DEAD_LETTER_KEY = "sb:ledger:dead"
DRAIN_LOCK_KEY = "sb:ledger:drain-lock"


@dataclass
class UsageEntry:
    request_id: str
    created: datetime
    status: str
    http_status: int = 200
    client_key_id: int | None = None
    client_key_name: str = ""
    route: str = ""
    provider: str = ""
    model: str = ""
    deployment_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    direct_cost_usd: Decimal | None = None
    latency_ms: int = 0
    error_code: str = ""
    streamed: bool = False
    usage_estimated: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        # orjson serializes dataclasses natively (fields in order), without asdict's deep copy.
        return orjson.dumps(self, default=_encode_decimal)

    @classmethod
    def decode(cls, raw: bytes) -> UsageEntry:
        data = orjson.loads(raw)
        data["created"] = datetime.fromisoformat(data["created"])
        data["cost_usd"] = Decimal(data["cost_usd"])
        if data.get("direct_cost_usd") is not None:
            data["direct_cost_usd"] = Decimal(data["direct_cost_usd"])
        return cls(**data)


def _encode_decimal(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


# Longest value each text column takes; an entry is clamped to them, so that one
# long provider error code cannot fail a whole batch on PostgreSQL.
TEXT_LIMITS = {
    "request_id": 64,
    "client_key_name": 100,
    "route": 200,
    "provider": 64,
    "model": 200,
    "error_code": 64,
    "status": 10,
}


def _record(entry: UsageEntry) -> UsageRecord:
    fields = asdict(entry)
    for name, limit in TEXT_LIMITS.items():
        fields[name] = str(fields[name])[:limit]
    return UsageRecord(**fields)


def drain(redis: Redis, batch_size: int = 500) -> int:
    """Move every pending entry into the database; returns how many were moved."""
    lock = redis.lock(DRAIN_LOCK_KEY, timeout=120, blocking=False)
    if not lock.acquire():
        return 0  # another worker is draining; it will take ours too
    moved = 0
    try:
        while True:
            raw_items: list[bytes] = redis.lrange(LEDGER_KEY, 0, batch_size - 1)  # type: ignore[assignment]
            if not raw_items:
                return moved
            rows = []
            for raw in raw_items:
                try:
                    rows.append((raw, _record(UsageEntry.decode(raw))))
                except (ValueError, TypeError, KeyError):
                    log.exception("ledger entry unreadable; kept in %s", DEAD_LETTER_KEY)
                    redis.rpush(DEAD_LETTER_KEY, raw)
            try:
                with transaction.atomic():
                    UsageRecord.objects.bulk_create([r for _, r in rows], ignore_conflicts=True)
            except DatabaseError:
                _insert_one_by_one(redis, rows)
            redis.ltrim(LEDGER_KEY, len(raw_items), -1)
            moved += len(raw_items)
            lock.extend(120, replace_ttl=True)
    finally:
        with suppress(LockError):  # it expired: another drainer may hold it now
            lock.release()


def _insert_one_by_one(redis: Redis, rows: list[tuple[bytes, UsageRecord]]) -> None:
    """The batch failed as a whole: keep every row the database accepts, set the rest aside."""
    for raw, row in rows:
        try:
            with transaction.atomic():
                UsageRecord.objects.bulk_create([row], ignore_conflicts=True)
        except DatabaseError:
            log.exception("ledger entry refused by the database; kept in %s", DEAD_LETTER_KEY)
            redis.rpush(DEAD_LETTER_KEY, raw)


def pending(redis: Redis) -> int:
    return int(redis.llen(LEDGER_KEY))  # type: ignore[arg-type]
