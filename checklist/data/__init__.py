"""The customer's own checklist, shipped with the code so nothing reads ../shared at run time."""

from __future__ import annotations

from pathlib import Path

CUSTOMER_CHECKLIST = Path(__file__).resolve().parent / "CHECKLIST.md"
