"""Writes of billing that have side effects or touch several rows."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from redis import Redis

from billing import ledger, samples
from billing.models import END_USER_MAX_LENGTH, Budget, ContentSample, UsageRecord
from project.redis import sync_client

log = logging.getLogger(__name__)


# Sent by forget_user inside its transaction, with `user_id` and `alias`, so that other
# apps erase what they keep of the end user (routing's feedback and batch requests)
# without billing importing them. Each receiver returns how many items it erased.
user_forgotten = Signal()


def upsert_budget(
    *, scope: str, scope_ref: str, period: str, amount_usd: Decimal, hard: bool, alert_at: list[int]
) -> str:
    """Create or update the budget of one (scope, ref, period); returns what happened."""
    fields = {"amount_usd": amount_usd, "hard": hard, "alert_at": alert_at}
    budget = Budget.objects.filter(scope=scope, scope_ref=scope_ref, period=period).first()
    if budget is None:
        Budget.objects.create(scope=scope, scope_ref=scope_ref, period=period, **fields)
        return "created"
    if budget.amount_usd == amount_usd and budget.hard == hard and budget.alert_at == alert_at:
        return "unchanged"
    # save(), not update(): the audit log records only saves.
    for name, value in fields.items():
        setattr(budget, name, value)
    budget.save(update_fields=list(fields))
    return "updated"


@dataclass(frozen=True)
class ForgetResult:
    pseudonym: str  # what the ledger calls the user now
    samples_erased: int
    records_pseudonymised: int
    # What other apps erased (receivers of user_forgotten): {receiver: items}.
    elsewhere: dict[str, int] = field(default_factory=dict)

    @property
    def erased_elsewhere(self) -> int:
        return sum(self.elsewhere.values())


def pseudonym(user_id: str) -> str:
    """A stable stand-in for an end-user id: the same user always gets the same one, so
    per-user counts still add up, but the id cannot be read back without SECRET_KEY."""
    digest = hmac.new(settings.SECRET_KEY.encode(), user_id.encode(), hashlib.sha256)
    return f"anon-{digest.hexdigest()[:16]}"


def forget_user(user_id: str, redis: Redis | None = None) -> ForgetResult:
    """Erase an end user's content samples and pseudonymise their usage records, and
    let other apps erase what they keep (`user_forgotten`: feedback, batch requests).

    Entries the gateway queued in Redis before now are drained first, under both
    drain locks, so that none of them reaches the database after the erasure with
    the id in it. A request answered while this runs is recorded under the id as
    usual: erasure covers what was stored, not what the client sends next.
    """
    user_id = user_id[:END_USER_MAX_LENGTH]
    if not user_id.strip():
        raise ValueError("forget_user needs an end-user id.")
    redis = redis or sync_client()
    alias = pseudonym(user_id)
    with ledger.LEDGER.held(redis) as ledger_lock, samples.SAMPLES.held(redis) as samples_lock:
        ledger.LEDGER.drain_held(redis, ledger_lock)
        samples.SAMPLES.drain_held(redis, samples_lock)
        with transaction.atomic():
            erased, _ = ContentSample.objects.filter(end_user=user_id).delete()
            records = _pseudonymise_records(user_id, alias)
            answers = user_forgotten.send(sender=ForgetResult, user_id=user_id, alias=alias)
        erased += _forget_dead_letters(redis, user_id, alias)
    elsewhere = {receiver_name(receiver): int(count or 0) for receiver, count in answers}
    # The audit trail: counts and the pseudonym, never the id itself.
    log.info(
        "forget_user: erased %d content sample(s), pseudonymised %d usage record(s) as %s; "
        "elsewhere %s",
        erased,
        records,
        alias,
        elsewhere,
    )
    return ForgetResult(alias, erased, records, elsewhere)


def receiver_name(receiver: Any) -> str:
    return f"{receiver.__module__}.{receiver.__qualname__}"


def _pseudonymise_records(user_id: str, alias: str) -> int:
    mention = _mention(user_id)
    rows = UsageRecord.objects.filter(end_user=user_id)
    changed: list[UsageRecord] = []
    for record in rows.only("pk", "context", "decision").iterator(chunk_size=1000):
        context = _scrub(record.context, mention, alias)
        decision = _scrub(record.decision, mention, alias)
        if context != record.context or decision != record.decision:
            record.context, record.decision = context, decision
            changed.append(record)
        if len(changed) >= 500:
            UsageRecord.objects.bulk_update(changed, ["context", "decision"])
            changed = []
    UsageRecord.objects.bulk_update(changed, ["context", "decision"])
    return rows.update(end_user=alias)


def _mention(user_id: str) -> re.Pattern[str]:
    # A whole token only: forgetting user "42" must not rewrite "1420 attendees".
    return re.compile(rf"(?<!\w){re.escape(user_id)}(?!\w)")


def _scrub(value: Any, mention: re.Pattern[str], alias: str) -> Any:
    if isinstance(value, str):
        return mention.sub(alias, value)
    if isinstance(value, list):
        return [_scrub(item, mention, alias) for item in value]
    if isinstance(value, dict):
        return {key: _scrub(item, mention, alias) for key, item in value.items()}
    return value


def _forget_dead_letters(redis: Redis, user_id: str, alias: str) -> int:
    """Entries set aside as unreadable or refused: the user's samples go, and their
    usage entries keep the pseudonym instead of the id. Runs under both drain locks,
    the only writers of these lists, so positions do not move underneath it."""
    quoted, quoted_alias = orjson.dumps(user_id), orjson.dumps(alias)
    erased = 0
    for raw in redis.lrange(samples.SAMPLES_DEAD_KEY, 0, -1):  # type: ignore[union-attr]
        if quoted in raw:
            erased += int(redis.lrem(samples.SAMPLES_DEAD_KEY, 0, raw))  # type: ignore[arg-type]
    dead: list[bytes] = redis.lrange(ledger.DEAD_LETTER_KEY, 0, -1)  # type: ignore[assignment]
    for index, raw in enumerate(dead):
        if quoted in raw:
            renamed: Any = raw.replace(quoted, quoted_alias)  # redis-py's stubs want str
            redis.lset(ledger.DEAD_LETTER_KEY, index, renamed)
    return erased
