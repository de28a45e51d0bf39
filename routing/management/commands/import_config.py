from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.actions import import_config
from routing.config import ConfigError, parse


class Command(BaseCommand):
    help = (
        "Load gateway configuration (providers, models, routes, budgets, key limits) from a "
        "YAML file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        try:
            # import_config is one transaction: a file that does not fit the
            # database (a credential with no key to keep) also changes nothing.
            report = import_config(parse(text))
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}. Nothing was changed.") from None
        summary = ", ".join(f"{count} {what}" for what, count in sorted(report.items()))
        self.stdout.write(f"Imported {path}: {summary or 'nothing to do'}.")
