from __future__ import annotations

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The alert outbox: channels, alerts, and one audit row per delivery attempt."""

    name = "project"
    label = "project"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from project.roles import sync_roles_after_migrate

        # Keeps the roles' permissions complete as apps add models.
        post_migrate.connect(sync_roles_after_migrate, dispatch_uid="project-sync-roles")

        from project.auditing import register_models

        register_models()
