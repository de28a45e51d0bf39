"""Plain helpers that make deterministic checklist data."""

from __future__ import annotations

from checklist.actions import import_checklist
from checklist.data import CUSTOMER_CHECKLIST
from checklist.models import Checklist


def make_checklist() -> Checklist:
    """The customer's checklist, imported."""
    return import_checklist(CUSTOMER_CHECKLIST.read_text()).checklist


def seed_checklist() -> None:
    """One row of every checklist model the admin shows (tests/project/test_roles.py)."""
    from checklist.actions import evaluate_evidence
    from checklist.models import FallbackDrill

    make_checklist()
    evaluate_evidence(keys=["circuit_breakers"])
    FallbackDrill.objects.create()
