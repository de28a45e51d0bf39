"""RQ jobs of the checklist. Each is safe to run twice."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from checklist import actions

# Evidence results younger than this are all kept; older ones thin to one per check per day.
EVIDENCE_FULL_HISTORY = timedelta(days=30)


def evaluate_evidence() -> int:
    """Measure every evidence check and keep the results (periodic, and on demand)."""
    return len(actions.evaluate_evidence())


def thin_evidence_history() -> int:
    """Keep the last month's evidence whole and a daily trend before it (~1,700 rows a
    day become 12)."""
    from checklist.models import EvidenceResult

    return EvidenceResult.objects.thin(timezone.now() - EVIDENCE_FULL_HISTORY)


def run_fallback_drill(drill_id: int) -> bool:
    """Run a queued fallback drill (checklist/drill.py) and record it as evidence."""
    from checklist.models import FallbackDrill

    drill = FallbackDrill.objects.filter(pk=drill_id).first()
    return drill is not None and actions.run_fallback_drill(drill)
