from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from checklist.actions import evaluate_evidence


class Command(BaseCommand):
    help = "Measure every evidence check now and keep the results (the periodic job does this)."

    def handle(self, *args: Any, **options: Any) -> None:
        for result in evaluate_evidence():
            shown = result.value or result.detail
            self.stdout.write(f"{result.status:8} {result.key:18} {shown}")
