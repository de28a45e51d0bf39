"""Erasure of an end user's content kept by routing, on billing's `user_forgotten`.

Batch items keep each request and answer until the batch's retention ends: an item
whose request names the user (OpenAI's `user`, or metadata `user_id`/`user`) loses
its messages and its answer, keeping its status, so the batch's counts still add up.
The response cache keeps answers only, keyed by a hash, for at most its TTL, and
holds no user id, so there is nothing to find there by user.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q

from routing.models import BatchItem
from routing.schema import END_USER_KEYS


def forget_user(sender: object, user_id: str, alias: str, **kwargs: Any) -> int:
    """Erase the user's batch requests and answers; returns how many items were erased."""
    named = Q(request__user=user_id)
    for key in END_USER_KEYS:
        named |= Q(**{f"request__metadata__{key}": user_id})
    erased = 0
    with transaction.atomic():  # inside forget_user's transaction: all of it, or none
        for item in BatchItem.objects.select_for_update().filter(named).only("id", "request"):
            item.request = {"model": item.request.get("model", ""), "erased_for": alias}
            item.response = None
            item.save(update_fields=["request", "response"])
            erased += 1
    return erased
