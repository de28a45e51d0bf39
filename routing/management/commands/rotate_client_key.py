from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.actions import rotate_client_key
from routing.models import ClientKey


class Command(BaseCommand):
    help = (
        "Issue a client key's successor; the old key works for --grace-hours more. "
        "The new key is printed once, alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "prefix", help="The key's prefix, as the admin shows it (sb-prod-xxxxxx)."
        )
        parser.add_argument("--grace-hours", type=float, default=24.0)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["grace_hours"] < 0:
            raise CommandError("--grace-hours cannot be negative.")
        keys = list(ClientKey.objects.active().filter(prefix=options["prefix"]))
        if len(keys) != 1:
            found = "no active key" if not keys else f"{len(keys)} active keys"
            raise CommandError(f"{found} with the prefix {options['prefix']!r}.")
        grace = timedelta(hours=options["grace_hours"])
        successor, raw = rotate_client_key(keys[0], grace)
        self.stdout.write(
            f"Rotated '{successor.name}': the old key ({keys[0].prefix}…) stops working in "
            f"{options['grace_hours']:g} h. Store the new key now: it is not shown again."
        )
        self.stdout.write(raw)
