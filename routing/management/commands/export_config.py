from __future__ import annotations

from typing import Any

import yaml
from django.core.management.base import BaseCommand

from routing.actions import export_config


class Command(BaseCommand):
    help = "Print the gateway configuration as YAML, in import_config's shape. No secrets."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(yaml.safe_dump(export_config(), sort_keys=False, width=100), ending="")
