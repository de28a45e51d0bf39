from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.actions import forget_user


class Command(BaseCommand):
    help = (
        "Erase an end user's stored content samples and batch requests, and replace "
        "their id in the usage ledger with a pseudonym (GDPR erasure). USER_ID is the id "
        "the client sent as "
        "OpenAI's `user` or metadata user_id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", metavar="USER_ID")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = forget_user(options["user_id"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Erased {result.samples_erased} content sample(s) and {result.erased_elsewhere} "
            f"other stored item(s) (feedback, batch requests); pseudonymised "
            f"{result.records_pseudonymised} usage record(s) as {result.pseudonym}."
        )
