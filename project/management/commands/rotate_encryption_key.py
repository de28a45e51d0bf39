"""Re-encrypt every stored secret under the newest encryption key.

Rotation: put a new Fernet key first in SWITCHBOARD_ENCRYPTION_KEYS (keep the
old ones after it), restart, run this command, then drop the old keys.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.secrets import SecretUnreadable, reencrypt_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (each EncryptedTextField) with the first key of "
        "SWITCHBOARD_ENCRYPTION_KEYS. Safe to run twice; all or nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Only report how many secrets each column holds and whether all decrypt.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            counts = reencrypt_all(dry_run=options["check"], progress=self._progress)
        except SecretUnreadable as exc:
            raise CommandError(
                f"{exc}. Nothing was changed: put every key still in use in "
                "SWITCHBOARD_ENCRYPTION_KEYS, newest first."
            ) from None
        total = sum(counts.values())
        for column, count in counts.items():
            self.stdout.write(f"  {column}: {count}")
        verb = "decrypt with the configured keys" if options["check"] else "re-encrypted"
        self.stdout.write(f"{total} secret(s) {verb}.")

    def _progress(self, done: int, total: int) -> None:
        if total and self.stdout.isatty():
            width = 30
            filled = width * done // total
            self.stdout.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", ending=""
            )
            if done == total:
                self.stdout.write("")
