"""Durable usage records: appended to a Redis list on the request path, drained
to the database in batches by a worker (`Queue`, which content samples use too).

The gateway appends before its response completes, so a crash after that loses
nothing; the drain is idempotent (rows are unique on request id and inserted
with ``ignore_conflicts``), so a drain that dies between insert and trim only
re-inserts rows the database already refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import DatabaseError, models, transaction
from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock

from billing.models import END_USER_MAX_LENGTH, UsageRecord

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
    cache_hit: bool = False  # answered from the response cache
    deduplicated: bool = False  # answered by an identical request's call in flight
    end_user: str = ""  # who the client says asked: OpenAI's `user`, or metadata user_id
    attempts: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    # Why this provider: the routing context, the rule that matched, the ranked candidates.
    decision: dict[str, Any] = field(default_factory=dict)
    quality_score: int | None = None  # 0-100, from the automated checks of the answer
    experiment: str = ""  # the A/B experiment the request took part in, and its arm
    arm: str = ""
    rollout_arm: str = ""  # "legacy" or "new" while a gradual rollout runs; empty otherwise

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
    "end_user": END_USER_MAX_LENGTH,
    "experiment": 100,
    "arm": 100,
    "rollout_arm": 20,
}


def _record(entry: UsageEntry) -> UsageRecord:
    fields = asdict(entry)
    for name, limit in TEXT_LIMITS.items():
        fields[name] = str(fields[name])[:limit]
    return UsageRecord(**fields)


@dataclass(frozen=True)
class Queue:
    """A Redis list the gateway appends to, and a worker drains into one model.

    Entries leave the list only after the database has them (or a dead letter
    list has them), and only a holder of the drain lock moves them.
    """

    key: str
    dead_key: str
    lock_key: str
    model: type[models.Model]
    row: Callable[[bytes], models.Model]

    def drain(self, redis: Redis, batch_size: int = 500) -> int:
        """Move every pending entry into the database; returns how many were moved."""
        lock = redis.lock(self.lock_key, timeout=120, blocking=False)
        if not lock.acquire():
            return 0  # another worker is draining; it will take ours too
        try:
            return self.drain_held(redis, lock, batch_size)
        finally:
            with suppress(LockError):  # it expired: another drainer may hold it now
                lock.release()

    @contextmanager
    def held(self, redis: Redis, wait_seconds: float = 30) -> Iterator[Lock]:
        """Hold the drain lock, waiting for a running drain to finish: while it is held,
        nothing but its holder moves entries from the list to the database."""
        lock = redis.lock(self.lock_key, timeout=120, blocking_timeout=wait_seconds)
        if not lock.acquire():
            raise LockError(f"{self.lock_key} stayed held for {wait_seconds:g} s")
        try:
            yield lock
        finally:
            with suppress(LockError):
                lock.release()

    def drain_held(self, redis: Redis, lock: Lock, batch_size: int = 500) -> int:
        moved = 0
        while True:
            raw_items: list[bytes] = redis.lrange(self.key, 0, batch_size - 1)  # type: ignore[assignment]
            if not raw_items:
                return moved
            rows = []
            for raw in raw_items:
                try:
                    rows.append((raw, self.row(raw)))
                except (ValueError, TypeError, KeyError):
                    log.exception("%s entry unreadable; kept in %s", self.key, self.dead_key)
                    redis.rpush(self.dead_key, raw)
            manager = self.model._default_manager
            try:
                with transaction.atomic():
                    manager.bulk_create([r for _, r in rows], ignore_conflicts=True)
            except DatabaseError:
                self._insert_one_by_one(redis, rows)
            redis.ltrim(self.key, len(raw_items), -1)
            moved += len(raw_items)
            lock.extend(120, replace_ttl=True)

    def _insert_one_by_one(self, redis: Redis, rows: list[tuple[bytes, models.Model]]) -> None:
        """The batch failed as a whole: keep every row the database accepts, set the rest aside."""
        for raw, row in rows:
            try:
                with transaction.atomic():
                    self.model._default_manager.bulk_create([row], ignore_conflicts=True)
            except DatabaseError:
                log.exception(
                    "%s entry refused by the database; kept in %s", self.key, self.dead_key
                )
                redis.rpush(self.dead_key, raw)

    def pending(self, redis: Redis) -> int:
        return int(redis.llen(self.key))  # type: ignore[arg-type]


LEDGER = Queue(
    LEDGER_KEY,
    DEAD_LETTER_KEY,
    DRAIN_LOCK_KEY,
    UsageRecord,
    lambda raw: _record(UsageEntry.decode(raw)),
)


def drain(redis: Redis, batch_size: int = 500) -> int:
    """Move every pending usage entry into the database; returns how many were moved."""
    return LEDGER.drain(redis, batch_size)


def pending(redis: Redis) -> int:
    return LEDGER.pending(redis)
