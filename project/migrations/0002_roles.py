"""The five roles as Django groups (project/roles.py says what each holds)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations


def create_roles(apps: Any, schema_editor: Any) -> None:
    # Permissions are normally created after every migration has run; the
    # groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    from project.roles import sync_roles

    sync_roles(apps)


def remove_roles(apps: Any, schema_editor: Any) -> None:
    from project.roles import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("project", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("routing", "0006_client_key_lifecycle"),
        ("billing", "0005_budget_default_thresholds"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
