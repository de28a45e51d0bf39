"""RQ jobs of rollouts. Each is safe to run twice."""

from __future__ import annotations

from billing import ledger
from project.redis import sync_client
from routing.experiments.actions import evaluate_and_roll_back
from routing.models import Rollout


def evaluate_rollouts() -> int:
    """Every minute (project/cron.py): each running rollout's rollback triggers over the
    sliding window; a failing check rolls it back. Returns how many were rolled back.

    The ledger is drained first, so the window holds the requests of the last seconds
    too, not only what the drain job (every 2 s) has moved so far.
    """
    ledger.drain(sync_client())
    rolled_back = 0
    for rollout in Rollout.objects.filter(status=Rollout.Status.RUNNING, percent__gt=0):
        before = rollout.status
        evaluate_and_roll_back(rollout)
        rolled_back += rollout.status != before
    return rolled_back
