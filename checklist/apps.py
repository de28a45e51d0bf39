from __future__ import annotations

from django.apps import AppConfig


class ChecklistConfig(AppConfig):
    name = "checklist"
    verbose_name = "Rollout checklist"
