from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from checklist.actions import evaluate_evidence, import_checklist, set_start_date
from checklist.data import CUSTOMER_CHECKLIST
from checklist.models import SignOffRole

# Development-only users, to try the stakeholder pages: (username = password, group, roles held).
DEMO_USERS = [
    ("stakeholder", "Stakeholder", ["Engineering Lead", "QA Lead"]),
    ("viewer", "Viewer", []),
]


class Command(BaseCommand):
    help = (
        "Load the customer's rollout checklist (shipped in checklist/data) for the demo, "
        "started ten days ago, with a stakeholder and a viewer to sign in as."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("The demo is for development machines; use import_checklist.")
        text = CUSTOMER_CHECKLIST.read_text()
        report = import_checklist(text, source_name=CUSTOMER_CHECKLIST.name)
        checklist = report.checklist
        if checklist.start_date is None:
            set_start_date(checklist, timezone.localdate() - timedelta(days=10))
        self.stdout.write(f"Checklist '{checklist.slug}': {report.summary()}")
        for username, group, roles in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            if created:
                user.set_password(username)
                user.save()
                self.stdout.write(f"Checklist user: {username} / {username} (development only)")
            user.groups.add(Group.objects.get(name=group))
            for role in SignOffRole.objects.filter(checklist=checklist, name__in=roles):
                role.users.add(user)
        evaluate_evidence()
