from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from checklist.actions import import_checklist
from checklist.data import CUSTOMER_CHECKLIST


class Command(BaseCommand):
    help = "Load the customer's rollout checklist (shipped in checklist/data) for the demo."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("The demo is for development machines; use import_checklist.")
        report = import_checklist(
            CUSTOMER_CHECKLIST.read_text(), source_name=CUSTOMER_CHECKLIST.name
        )
        self.stdout.write(f"Checklist '{report.checklist.slug}': {report.summary()}")
