"""RQ jobs of quality. Each re-reads its state and is safe to run twice."""

from __future__ import annotations

from decimal import Decimal

from project.redis import sync_client
from routing.quality import rolling


def publish_deployment_quality() -> dict[int, Decimal]:
    """Every minute (project/cron.py): each deployment's rolling quality into Redis."""
    return rolling.publish(sync_client())
