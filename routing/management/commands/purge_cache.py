from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.actions import purge_cached_answers
from routing.admin import cached_answers
from routing.models import ClientKey


class Command(BaseCommand):
    help = (
        "Delete cached answers (routing/cache.py): of a route, of a client key, of both, "
        "or --all. Every gateway process sees it at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--route", help="A route name, or the model name a request asked for.")
        parser.add_argument(
            "--key", help="A client key's prefix, as the admin shows it, or its code (UUID)."
        )
        parser.add_argument("--all", action="store_true", help="Every cached answer.")

    def handle(self, *args: Any, **options: Any) -> None:
        route, key_ref = options["route"], options["key"]
        if not (route or key_ref or options["all"]):
            raise CommandError("Name a --route, a --key, or purge --all.")
        if options["all"] and (route or key_ref):
            raise CommandError("--all purges everything; give it alone.")
        key = None
        if key_ref:
            try:
                key = ClientKey.objects.filter(code=uuid.UUID(key_ref)).first()
            except ValueError:
                key = ClientKey.objects.filter(prefix=key_ref).first()
            if key is None:
                raise CommandError(f"No client key with the prefix or code {key_ref!r}.")
        deleted = purge_cached_answers(route=route, key=key)
        self.stdout.write(f"Deleted {cached_answers(deleted)}.")
