from __future__ import annotations

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The alert outbox: channels, alerts, and one audit row per delivery attempt."""

    name = "project"
    label = "project"
    verbose_name = "Alerts"
