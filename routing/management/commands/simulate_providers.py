"""`manage.py simulate_providers --port N [--delay-ms M]`: run the provider simulator."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from routing.simulator.server import DEFAULT_HOST, DEFAULT_PORT, run


class Command(BaseCommand):
    help = "Serve fake AIMLAPI, OpenAI, Anthropic and Gemini endpoints (tests and benchmarks)."
    # The simulator touches neither models nor the database.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument("--host", default=DEFAULT_HOST)
        parser.add_argument(
            "--delay-ms",
            type=int,
            default=None,
            help="added before every answer (default: $SIM_DELAY_MS or 0)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run(host=options["host"], port=options["port"], delay_ms=options["delay_ms"])
