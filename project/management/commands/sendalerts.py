"""Deliver due alerts now, without an RQ worker (the cron job does this every 10 s)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from project.jobs import deliver_alerts


class Command(BaseCommand):
    help = "Deliver every due alert once and report how many were claimed."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Claimed {deliver_alerts()} alert(s).")
