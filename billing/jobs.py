"""RQ jobs of billing. Each is safe to run twice."""

from __future__ import annotations

from billing import ledger, samples, watch
from project.redis import sync_client


def drain_ledger() -> int:
    return ledger.drain(sync_client())


def drain_samples() -> int:
    """Move queued content samples (only written when sampling is on) to the database."""
    return samples.drain(sync_client())


def purge_expired_samples() -> int:
    """Delete content samples older than SWITCHBOARD_SAMPLE_RETENTION_DAYS."""
    return samples.purge_expired()


def check_budgets() -> int:
    """Alert budget thresholds crossed (70/85/95% by default), once per period each."""
    return len(watch.check_thresholds(sync_client()))


def reconcile_spend() -> int:
    """Raise Redis's real-time spend to the ledger's where it fell behind."""
    return len(watch.reconcile(sync_client()))


def check_forecasts() -> int:
    """Alert budgets projected to overrun this period (once per period each)."""
    return len(watch.check_forecasts())


def check_spend_anomaly() -> bool:
    return watch.check_anomaly()
