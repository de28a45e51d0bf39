"""Forgetting an end user reaches the batch requests and answers routing keeps."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from billing.actions import forget_user, pseudonym
from routing.actions import create_client_key
from routing.models import Batch, BatchItem

pytestmark = pytest.mark.django_db


def item(batch: Batch, index: int, **request: object) -> BatchItem:
    body = {"model": "summary", "messages": [{"role": "user", "content": "Call notes"}]}
    return BatchItem.objects.create(
        batch=batch,
        index=index,
        request={**body, **request},
        status=BatchItem.Status.ANSWERED,
        response={"choices": [{"message": {"content": "A summary of the call."}}]},
    )


@pytest.fixture
def batch() -> Batch:
    key, _ = create_client_key("notes", ["chat", "batches"], "prod")
    return Batch.objects.create(client_key=key, total=4, status=Batch.Status.COMPLETED)


def test_the_users_batch_items_lose_their_messages_and_answers(batch: Batch) -> None:
    by_user_field = item(batch, 0, user="alice-42")
    by_metadata = item(batch, 1, metadata={"user_id": "alice-42"})
    someone_else = item(batch, 2, user="bob")
    nobody = item(batch, 3)

    result = forget_user("alice-42")

    assert result.elsewhere["routing.privacy.forget_user"] == 2
    for erased in (by_user_field, by_metadata):
        erased.refresh_from_db()
        assert erased.request == {"model": "summary", "erased_for": pseudonym("alice-42")}
        assert erased.response is None
        assert erased.status == BatchItem.Status.ANSWERED  # the batch's counts still add up
    for kept in (someone_else, nobody):
        kept.refresh_from_db()
        assert kept.request["messages"] and kept.response is not None


def test_the_command_counts_what_other_apps_erased(batch: Batch) -> None:
    item(batch, 0, user="alice-42")
    out = StringIO()
    call_command("forget_user", "alice-42", stdout=out)
    assert "and 1 other stored item(s) (feedback, batch requests)" in out.getvalue()
    assert "alice-42" not in str(BatchItem.objects.values_list("request", flat=True))
