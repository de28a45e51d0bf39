from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from project.incidents import ladder
from routing.actions import create_client_key, import_config, revoke_client_key
from routing.config import parse
from routing.models import ClientKey

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "demo" / "demo.yaml"
DEMO_KEY_NAME = "demo"


class Command(BaseCommand):
    help = (
        "Load the demo: the four providers served by the simulator at --simulator, "
        "a fresh demo client key (printed on a line starting 'Demo key: '), and an admin user."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--simulator", default="http://127.0.0.1:8001")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError(
                "The demo is for development machines; SWITCHBOARD_ENV is production."
            )
        text = DEMO_CONFIG.read_text().replace("{simulator}", options["simulator"].rstrip("/"))
        report = import_config(parse(text))
        self.stdout.write(f"Demo configuration: {dict(sorted(report.items()))}")
        # Keys are stored hashed, so a demo key cannot be shown again: replace it.
        for old in ClientKey.objects.active().filter(name=DEMO_KEY_NAME):
            revoke_client_key(old)
        _, raw = create_client_key(DEMO_KEY_NAME, ["chat", "usage:read", "feedback"], "dev")
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("Admin user: admin / admin (development only)")
        # Incidents reach someone: the admin is the demo's development team (level 1).
        ladder()[0].users.add(User.objects.get(username="admin"))
        # A month of history, so the spend dashboard has a trend to draw and forecast.
        call_command("seed_usage_history", stdout=self.stdout)
        # Quality scores and ratings on that history, for the Quality page.
        call_command("seed_feedback", stdout=self.stdout)
        # The rollout checklist, by command name: routing never imports checklist.
        call_command("load_demo_checklist", stdout=self.stdout)
        self.stdout.write(f"Demo key: {raw}")
