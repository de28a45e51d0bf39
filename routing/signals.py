"""Every committed change to routing configuration bumps the version in Redis,
which tells each gateway process to rebuild its routing table."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from billing.actions import user_forgotten
from billing.models import Budget
from project.redis import sync_client
from routing import privacy
from routing.models import (
    ClientKey,
    Deployment,
    Experiment,
    Organisation,
    PriceOverride,
    Provider,
    ProviderCredential,
    ProviderPlan,
    QualityRule,
    Rollout,
    Route,
    RouteStep,
    RoutingRule,
    Variant,
)
from routing.quality.feedback import forget_end_user
from routing.table import bump_version


def config_changed() -> None:
    transaction.on_commit(lambda: bump_version(sync_client()))


def _on_save_or_delete(sender: type, **kwargs: Any) -> None:
    config_changed()


for model in (
    Provider,
    ProviderCredential,
    ProviderPlan,
    Deployment,
    PriceOverride,
    Route,
    RouteStep,
    RoutingRule,
    ClientKey,
    Organisation,
    Budget,
    Experiment,
    Variant,
    Rollout,
    QualityRule,
):
    name = model.__name__
    post_save.connect(_on_save_or_delete, sender=model, dispatch_uid=f"config-{name}-save")
    post_delete.connect(_on_save_or_delete, sender=model, dispatch_uid=f"config-{name}-delete")

user_forgotten.connect(forget_end_user, dispatch_uid="routing-feedback-forget-user")
user_forgotten.connect(privacy.forget_user, dispatch_uid="routing-batches-forget-user")
