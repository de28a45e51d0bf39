"""Roles: Django groups and the permissions each one holds.

Administrator: everything. Operator: the gateway (providers, models, routes, keys,
breakers, alerts, the job queues, experiments and rollouts: start, promote, advance a
phase, roll back now), reading spend. Finance: prices, plans, budgets and spend, the
monitoring dashboard (routing.monitoring), and reading experiments and rollouts.
Stakeholder: rollouts and incidents to read, and the rollout checklist: items, comments,
re-measuring evidence, and signing off the sign-off roles they are assigned
(checklist.actions checks the assignment); who holds a role, and the history rows, only
Administrators change. Operators run fallback drills (checklist.add_fallbackdrill).
Incidents: Operators (project.change_incident) and Administrators acknowledge, note and
resolve them and set the escalation ladder's contacts; Finance and Stakeholders read
incidents and their runbooks. Viewer: read-only everywhere. Stored content (prompt
samples) and erasing an end user (`billing.forget_end_user`, which no
add/change/delete/view grant names) are for Administrator alone, and so is the audit log
of configuration changes (auditlog.logentry, project/auditing.py): it shows every area's
changes, so no narrower role reads it.

A migration creates the groups, and every `migrate` brings them up to date
(post_migrate), so a model added later joins its roles without a new data migration.
Models are named by label: project imports none of the apps.
"""

from __future__ import annotations

from typing import Any

ALL = ("add", "change", "delete", "view")
VIEW = ("view",)
GATEWAY_APPS = ("routing", "billing", "project", "checklist")
# Models no "app.*" grant reaches: content samples are end users' own words.
ADMINISTRATOR_ONLY = {"billing.contentsample"}

# Role -> {"app.model" or "app.*": actions}
ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "Administrator": {},  # every permission, auditlog.view_logentry among them; see sync_roles
    "Operator": {
        "routing.*": ALL,
        "project.*": ALL,
        "billing.*": VIEW,
        "checklist.*": VIEW,  # the checklist page, where the drill button is
        "checklist.fallbackdrill": ("add", "view"),  # running a drill is adding one
        "django_rq.dashboard": ("admin",),  # RQ's dashboard (project/admin.py)
    },
    "Finance": {
        "billing.*": ALL,
        "routing.deployment": ("change", "view"),
        "routing.priceoverride": ALL,
        "routing.providerplan": ALL,
        "routing.provider": VIEW,
        "routing.route": VIEW,
        "routing.monitoring": VIEW,  # the monitoring dashboard and performance report
        "project.alert": VIEW,
        "project.channel": ALL,
        # Incidents (a budget exceeded among them) and the ladder: read, not acted on.
        "project.incident": VIEW,
        "project.incidentevent": VIEW,
        "project.escalationlevel": VIEW,
        # Rollouts and experiments weigh cost per request and spend pace.
        "routing.experiment": VIEW,
        "routing.rollout": VIEW,
        "routing.rolloutevent": VIEW,
    },
    "Stakeholder": {
        "checklist.*": ("change", "view"),
        "checklist.signoffrole": VIEW,
        "checklist.itemevent": VIEW,
        "checklist.signoff": ("add", "view"),
        "checklist.evidenceresult": ("add", "view"),
        "checklist.fallbackdrill": VIEW,
        "billing.budget": VIEW,
        # A rollback is theirs to know about (the checklist's "stakeholder notification").
        "project.incident": VIEW,
        "project.incidentevent": VIEW,
        "routing.rollout": VIEW,  # the rollout's progress, arm by arm
        "routing.rolloutevent": VIEW,
    },
    "Viewer": {f"{app}.*": VIEW for app in GATEWAY_APPS},
}


def sync_roles(apps: Any = None) -> None:
    """Create the groups and give each exactly its permissions (idempotent)."""
    if apps is None:
        from django.apps import apps as live_apps

        apps = live_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = list(Permission.objects.select_related("content_type"))
    for role, grants in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        if role == "Administrator":
            wanted = permissions
        else:
            wanted = [p for p in permissions if _granted(p, grants)]
        group.permissions.set(wanted)


def _granted(permission: Any, grants: dict[str, tuple[str, ...]]) -> bool:
    app, model = permission.content_type.app_label, permission.content_type.model
    if f"{app}.{model}" in ADMINISTRATOR_ONLY:
        return False
    action = permission.codename.split("_", 1)[0]
    actions = grants.get(f"{app}.{model}") or grants.get(f"{app}.*") or ()
    return action in actions


def sync_roles_after_migrate(sender: Any, **kwargs: Any) -> None:
    sync_roles(kwargs.get("apps"))
