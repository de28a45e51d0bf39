"""Writes of batches: storing a checked one, cancelling one."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from routing.batches.checks import Entry
from routing.batches.jobs import enqueue_batch
from routing.models import Batch, BatchItem, ClientKey


@transaction.atomic
def submit_batch(key: ClientKey, entries: list[Entry], route: str = "") -> Batch:
    """Store a checked batch and queue it for a worker (once the rows are committed)."""
    batch = Batch.objects.create(client_key=key, route=route, total=len(entries))
    BatchItem.objects.bulk_create(
        (
            BatchItem(batch=batch, index=index, custom_id=entry.custom_id, request=entry.request)
            for index, entry in enumerate(entries)
        ),
        batch_size=1000,
    )
    # Robust: a Redis hiccup here leaves the batch queued, and the resumer queues it.
    transaction.on_commit(lambda: enqueue_batch(batch.pk), robust=True)
    return batch


@transaction.atomic
def cancel_batch(batch: Batch) -> bool:
    """Stop a batch: items not started are cancelled; items in flight finish and are kept.

    False if it had already finished. The runner sees the cancellation when its
    next claim of a pending item finds none left.
    """
    now = timezone.now()
    cancelled = Batch.objects.filter(pk=batch.pk, status__in=Batch.UNFINISHED).update(
        status=Batch.Status.CANCELLED
    )
    if not cancelled:
        return False
    batch.items.filter(status=BatchItem.Status.PENDING).update(
        status=BatchItem.Status.CANCELLED, finished_at=now
    )
    if not batch.items.filter(status=BatchItem.Status.RUNNING).exists():
        # Otherwise the runner notes the time its last request in flight settles.
        Batch.objects.filter(pk=batch.pk).update(finished_at=now)
    return True
