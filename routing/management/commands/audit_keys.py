from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from project.redis import sync_client
from routing.audit import audit


class Command(BaseCommand):
    help = (
        "Audit client keys and provider credentials: never used, unused for --days, overdue "
        "for rotation, expired but not revoked, scopes not used, refused by the provider, "
        "missing, or found in plaintext. Exits 1 when something needs action."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=30, help="What counts as unused.")

    def handle(self, *args: Any, **options: Any) -> None:
        findings = audit(sync_client(), unused_days=options["days"])
        if not findings:
            self.stdout.write("Key audit: nothing needs action.")
            return
        for finding in findings:
            self.stdout.write(
                f"{finding.kind}: {finding.subject}: {finding.problem}; {finding.action}."
            )
        self.stdout.write(f"Key audit: {len(findings)} finding(s) need action.")
        sys.exit(1)
