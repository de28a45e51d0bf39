from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from checklist.actions import import_checklist
from checklist.markdown import ChecklistSyntaxError


class Command(BaseCommand):
    help = (
        "Load a checklist from Markdown (phases ##, sections ###, nested '- [ ]' items). "
        "Re-importing an edited file updates it in place and keeps progress."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--slug", default="", help="The checklist's slug (default: its title)")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        try:
            report = import_checklist(text, options["slug"], source_name=path.name)
        except ChecklistSyntaxError as exc:
            raise CommandError(f"{path}: {exc}. Nothing was changed.") from None
        self.stdout.write(f"Imported {path} as '{report.checklist.slug}': {report.summary()}.")
