from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from checklist.actions import run_fallback_drill
from checklist.drill import Outcome
from checklist.models import FallbackDrill


class Command(BaseCommand):
    help = (
        "Break the simulator-backed providers of an environment on purpose (each provider in "
        "turn, all but one, a timeout, a 429 storm) and check every request is answered "
        "through the expected provider. The result is kept as checklist evidence."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--environment", default="staging")
        parser.add_argument(
            "--simulator", default="", help="The simulator's URL (default: from the providers)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        drill = FallbackDrill.objects.create(environment=options["environment"])

        def show(outcome: Outcome) -> None:
            mark = "ok  " if outcome.ok else "FAIL"
            answered = ", ".join(sorted(set(outcome.answered_by))) or "nobody"
            line = f"{mark} {outcome.name}: answered by {answered} ({outcome.seconds} s)"
            self.stdout.write(line + (f" - {outcome.detail}" if outcome.detail else ""))

        run_fallback_drill(drill, options["simulator"], progress=show)
        drill.refresh_from_db()
        if drill.status == FallbackDrill.Status.ERROR:
            raise CommandError(f"The drill could not run: {drill.error}")
        summary = f"{drill.passed_count} of {len(drill.scenarios)} scenarios passed"
        if drill.status != FallbackDrill.Status.PASSED:
            raise CommandError(f"Fallback drill failed on route {drill.route}: {summary}.")
        self.stdout.write(f"Fallback drill passed on route {drill.route}: {summary}.")
