"""The audit log: who changed which configuration row, when, and what changed.

django-auditlog writes one `auditlog.LogEntry` per create, update or delete of a
model in TRACKED, holding the changed fields' old and new values as JSON and the
signed-in user (AuditlogMiddleware). A change made by a command or a job has no
user and shows as "system". Only rows saved or deleted one at a time are seen:
`QuerySet.update()` and `bulk_create()` send no signal, so tracked models are
written with save(), and a write that must stay a conditional UPDATE (revoking a
key) records its entry with `record_update()`.

project imports no app, so models are named by label. Adding a model is one line.
"""

from __future__ import annotations

import copy
from typing import Any

from django.db.models import Model

# Masks a secret to a constant: the entry says that the secret changed, and holds
# not one character of it (auditlog's own mask keeps the second half visible).
SECRET = "project.auditing.redact"

# Model label -> options for `auditlog.register()`. A secret field is either
# excluded (nothing recorded) or masked with SECRET (recorded as "[redacted]"),
# never left in: tests/project/test_audit_log.py checks every secret-looking field.
TRACKED: dict[str, dict[str, Any]] = {
    "routing.Provider": {},
    # The stored key is masked, not excluded, so replacing it is recorded even
    # when the new key ends in the same four characters.
    "routing.ProviderCredential": {"mask_fields": ["secret_encrypted"], "mask_callable": SECRET},
    "routing.ProviderPlan": {},
    "routing.Deployment": {},
    "routing.PriceOverride": {},
    "routing.Route": {},
    "routing.RouteStep": {},
    "routing.QualityRule": {},
    "routing.RoutingRule": {},
    # key_hash is set once, at creation, with the prefix that identifies the key;
    # last_used_at is written by the gateway on every use, not by anyone changing the key.
    "routing.ClientKey": {"exclude_fields": ["key_hash", "last_used_at"]},
    "routing.Experiment": {},
    "routing.Variant": {},
    "routing.Rollout": {},
    "routing.Organisation": {},
    "billing.Budget": {},
    # The target (a webhook URL holds a token) is recorded as changed, never by value;
    # target_shown says where it points (an email address, or a URL's scheme and host).
    "project.Channel": {"mask_fields": ["target_encrypted"], "mask_callable": SECRET},
    "checklist.Checklist": {},
    "checklist.Item": {},
    "checklist.SignOffRole": {"m2m_fields": {"users"}},
    # The evidence snapshot is on the row itself; the log records who signed and revoked.
    "checklist.SignOff": {"exclude_fields": ["evidence"]},
}


def register_models() -> None:
    """Connect auditlog to every model in TRACKED (called from ProjectConfig.ready)."""
    from auditlog.registry import auditlog
    from django.apps import apps

    for label, options in TRACKED.items():
        model = apps.get_model(label)
        # Other rows' links to this one (a provider's deployments) are not its fields:
        # auditlog would record the related manager's repr for them on create.
        reverse = [f.name for f in model._meta.get_fields() if f.auto_created and not f.concrete]
        exclude = [*options.get("exclude_fields", []), *reverse]
        auditlog.register(model, **{**options, "exclude_fields": exclude})


# auditlog hands a mask the value as a string, an absent one (the row was created
# or deleted) as "None"; the masks give that back as None, like an unmasked field.


def redact(value: str) -> str | None:
    if value == "None":
        return None
    return "[redacted]" if value else ""


def record_update(instance: Model, **new_values: Any) -> None:
    """Write the entry that save() would have written, for a row changed by a
    conditional UPDATE (kept atomic against a race), which sends no signal.
    ``instance`` holds the values before; ``new_values`` the ones the UPDATE set."""
    from auditlog import get_logentry_model
    from auditlog.diff import model_instance_diff
    from django.conf import settings

    after = copy.copy(instance)
    for name, value in new_values.items():
        setattr(after, name, value)
    changes = model_instance_diff(
        instance,
        after,
        fields_to_check=list(new_values),
        use_json_for_changes=settings.AUDITLOG_STORE_JSON_CHANGES,
    )
    LogEntry = get_logentry_model()
    LogEntry.objects.log_create(after, action=LogEntry.Action.UPDATE, changes=changes)
