"""RQ jobs of billing. Each is safe to run twice."""

from __future__ import annotations

from billing import ledger
from project.redis import sync_client


def drain_ledger() -> int:
    return ledger.drain(sync_client())
