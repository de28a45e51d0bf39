from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.actions import create_client_key
from routing.models import Environment, Organisation, Scope


class Command(BaseCommand):
    help = (
        "Create a client key. The key is printed once, alone on the last line, and stored hashed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes", default="chat", help="Comma-separated: " + ", ".join(Scope.values)
        )
        parser.add_argument("--env", default="prod", choices=Environment.values)
        parser.add_argument(
            "--organisation",
            default="",
            help="The name of the key's organisation (its industry and languages apply).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        # "usage" is accepted as shorthand for the read scope.
        scopes = ["usage:read" if s == "usage" else s for s in scopes]
        unknown = sorted(set(scopes) - set(Scope.values))
        if unknown or not scopes:
            named = ", ".join(unknown) or "(none given)"
            raise CommandError(f"Unknown scope {named}; choose from {', '.join(Scope.values)}.")
        organisation = None
        if options["organisation"]:
            organisation = Organisation.objects.filter(name=options["organisation"]).first()
            if organisation is None:
                raise CommandError(f"No organisation is named {options['organisation']!r}.")
        key, raw = create_client_key(options["name"], scopes, options["env"], organisation)
        self.stdout.write(
            f"Created key '{key.name}' ({key.environment}, scopes: {', '.join(scopes)})."
        )
        self.stdout.write("Store it now: it is not shown again.")
        self.stdout.write(raw)
