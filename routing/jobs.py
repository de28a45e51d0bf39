"""RQ jobs of routing. Each takes no state from its caller and is safe to run twice."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q
from redis import Redis
from redis.exceptions import LockError

from project.redis import sync_client
from routing.breaker import TRANSITIONS_KEY, decode_transition
from routing.models import BreakerEvent, Deployment


def persist_breaker_transitions(batch_size: int = 500) -> int:
    """Copy breaker transitions from Redis into BreakerEvent rows for the admin."""
    redis = sync_client()
    lock = redis.lock("sb:breaker:persist-lock", timeout=60, blocking=False)
    if not lock.acquire():
        return 0  # another worker is copying them
    try:
        return _persist(redis, batch_size)
    finally:
        with suppress(LockError):  # it expired: another worker may hold it now
            lock.release()


def _persist(redis: Redis, batch_size: int) -> int:
    raw_items: list[bytes] = redis.lrange(TRANSITIONS_KEY, 0, batch_size - 1)  # type: ignore[assignment]
    if not raw_items:
        return 0
    transitions = [decode_transition(raw) for raw in raw_items]
    known = set(
        Deployment.objects.filter(id__in={t["deployment_id"] for t in transitions}).values_list(
            "id", flat=True
        )
    )
    BreakerEvent.objects.bulk_create(
        [
            BreakerEvent(
                deployment_id=t["deployment_id"],
                from_state=t["from_state"],
                to_state=t["to_state"],
                reason=str(t.get("reason", ""))[:200],
                created=datetime.fromtimestamp(float(t["at"]), tz=UTC),
            )
            for t in transitions
            if t["deployment_id"] in known  # a deployment deleted since has no admin page
        ],
        ignore_conflicts=True,
    )
    redis.ltrim(TRANSITIONS_KEY, len(raw_items), -1)
    return len(raw_items)


def persist_key_usage() -> int:
    """Copy client keys' and provider credentials' last-used times from Redis (only forward)."""
    from routing.engine import CREDENTIAL_LAST_USED, KEY_LAST_USED
    from routing.models import ClientKey, ProviderCredential

    redis = sync_client()
    return _copy_last_used(redis, KEY_LAST_USED, ClientKey) + _copy_last_used(
        redis, CREDENTIAL_LAST_USED, ProviderCredential
    )


def _copy_last_used(redis: Redis, hash_key: str, model: type[Any]) -> int:
    # update() sends no signal: copying usage does not rebuild every routing table.
    updated = 0
    for row_id, stamp in redis.hgetall(hash_key).items():  # type: ignore[union-attr]
        used = datetime.fromtimestamp(int(stamp), tz=UTC)
        updated += model.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=used), pk=int(row_id)
        ).update(last_used_at=used)
    return updated


def alert_overdue_credentials() -> int:
    """Raise an alert (outbox) for each provider credential past its rotation date."""
    from routing.actions import alert_overdue_credentials as alert

    return alert()


def probe_deployments() -> int:
    """Probe every enabled deployment once (routing/health.py); return how many."""
    from routing.health import run_probes

    return len(run_probes())


def purge_probe_results() -> int:
    """Delete health probe results past their retention (SWITCHBOARD_PROBE_RETENTION_DAYS)."""
    from routing.health import purge_probe_results as purge

    return purge()


def check_anomalies() -> int:
    """Alert providers whose latency or error rate is far above their baseline (once each)."""
    from routing.monitoring import check_anomalies as check

    return len(check(sync_client()))
