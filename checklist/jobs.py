"""RQ jobs of the checklist. Each is safe to run twice."""

from __future__ import annotations

from checklist import actions


def evaluate_evidence() -> int:
    """Measure every evidence check and keep the results (periodic, and on demand)."""
    return len(actions.evaluate_evidence())


def run_fallback_drill(drill_id: int) -> bool:
    """Run a queued fallback drill (checklist/drill.py) and record it as evidence."""
    from checklist.models import FallbackDrill

    drill = FallbackDrill.objects.filter(pk=drill_id).first()
    return drill is not None and actions.run_fallback_drill(drill)
