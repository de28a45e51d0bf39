"""RQ jobs of the checklist. Each is safe to run twice."""

from __future__ import annotations

from checklist import actions


def evaluate_evidence() -> int:
    """Measure every evidence check and keep the results (periodic, and on demand)."""
    return len(actions.evaluate_evidence())
