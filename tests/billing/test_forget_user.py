"""forget_user: an end user's samples are erased and their ledger rows pseudonymised."""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from redis import Redis

from billing import ledger, samples
from billing.actions import forget_user, pseudonym
from billing.ledger import UsageEntry
from billing.models import ContentSample, UsageRecord
from billing.samples import SampleEntry

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def make_record(request_id: str, end_user: str, **context: str) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=request_id,
        created=WHEN,
        status="ok",
        provider="aimlapi",
        model="gpt-4o-mini",
        cost_usd=Decimal("0.001"),
        end_user=end_user,
        context=context,
    )


def make_sample(request_id: str, end_user: str) -> ContentSample:
    return ContentSample.objects.create(
        request_id=request_id,
        created=WHEN,
        end_user=end_user,
        status="ok",
        messages=[{"role": "user", "content": "Summarise the call."}],
        completion="Done.",
    )


def test_it_erases_the_users_samples_and_pseudonymises_their_ledger_rows(redis: Redis) -> None:
    make_record("r1", "alice-42", meeting_type="sales", participants="alice-42, carol")
    make_record("r2", "alice-42")
    make_record("r3", "bob", participants="alice-42, bob")
    make_sample("r1", "alice-42")
    make_sample("r3", "bob")

    result = forget_user("alice-42", redis)

    alias = pseudonym("alice-42")
    assert (result.pseudonym, result.samples_erased, result.records_pseudonymised) == (alias, 1, 2)
    assert list(ContentSample.objects.values_list("request_id", flat=True)) == ["r3"]
    assert UsageRecord.objects.get(request_id="r1").context == {
        "meeting_type": "sales",
        "participants": f"{alias}, carol",
    }
    # Per-user counts and costs still add up, under the pseudonym.
    assert UsageRecord.objects.filter(end_user=alias).count() == 2
    assert not UsageRecord.objects.filter(end_user="alice-42").exists()
    # Rows of other users are theirs, even where they mention her.
    assert UsageRecord.objects.get(request_id="r3").end_user == "bob"


def test_the_pseudonym_is_stable_and_does_not_reveal_the_id() -> None:
    alias = pseudonym("alice@example.com")

    assert alias == pseudonym("alice@example.com") != pseudonym("alice@example.org")
    assert alias.startswith("anon-") and len(alias) == 21
    assert "alice" not in alias


def test_only_whole_mentions_of_the_id_are_replaced(redis: Redis) -> None:
    make_record("r1", "42", note="42 joined; 1420 attendees; user 42.")

    forget_user("42", redis)

    alias = pseudonym("42")
    assert UsageRecord.objects.get().context == {
        "note": f"{alias} joined; 1420 attendees; user {alias}."
    }


def test_what_is_still_queued_in_redis_is_forgotten_too(redis: Redis) -> None:
    entry = UsageEntry(request_id="r1", created=WHEN, status="ok", end_user="alice-42")
    redis.rpush(ledger.LEDGER_KEY, entry.encode())
    sample = SampleEntry(request_id="r1", created=WHEN, status="ok", end_user="alice-42")
    other = SampleEntry(request_id="r2", created=WHEN, status="ok", end_user="bob")
    redis.rpush(samples.SAMPLES_KEY, sample.encode(), other.encode())

    result = forget_user("alice-42", redis)

    assert (result.samples_erased, result.records_pseudonymised) == (1, 1)
    assert ledger.pending(redis) == 0 and samples.SAMPLES.pending(redis) == 0
    assert UsageRecord.objects.get().end_user == pseudonym("alice-42")
    assert list(ContentSample.objects.values_list("end_user", flat=True)) == ["bob"]


def test_dead_letters_lose_the_users_samples_and_keep_their_usage_under_the_pseudonym(
    redis: Redis,
) -> None:
    sample = SampleEntry(request_id="r1", created=WHEN, status="ok", end_user="alice-42")
    redis.rpush(samples.SAMPLES_DEAD_KEY, sample.encode())
    redis.rpush(ledger.DEAD_LETTER_KEY, b'{"request_id": "r1", "end_user":"alice-42"')

    assert forget_user("alice-42", redis).samples_erased == 1

    assert redis.llen(samples.SAMPLES_DEAD_KEY) == 0
    dead = redis.lrange(ledger.DEAD_LETTER_KEY, 0, -1)
    assert dead == [f'{{"request_id": "r1", "end_user":"{pseudonym("alice-42")}"'.encode()]


def test_the_erasure_is_logged_without_the_id(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    make_record("r1", "alice-42")

    with caplog.at_level(logging.INFO, logger="billing.actions"):
        forget_user("alice-42", redis)

    assert "pseudonymised 1 usage record(s)" in caplog.text
    assert pseudonym("alice-42") in caplog.text
    assert "alice-42" not in caplog.text


def test_the_command_says_what_it_erased() -> None:
    make_record("r1", "alice-42")
    make_record("r2", "alice-42")
    make_sample("r1", "alice-42")
    out = StringIO()

    call_command("forget_user", "alice-42", stdout=out)

    assert out.getvalue().strip() == (
        "Erased 1 content sample(s) and 0 other stored item(s) (feedback, batch requests); "
        f"pseudonymised 2 usage record(s) as {pseudonym('alice-42')}."
    )
    assert not ContentSample.objects.exists()


def test_the_command_succeeds_when_nothing_is_stored_and_refuses_an_empty_id() -> None:
    out = StringIO()
    call_command("forget_user", "nobody", stdout=out)
    assert "Erased 0 content sample(s) and 0 other stored item(s)" in out.getvalue()
    assert "pseudonymised 0 usage record(s)" in out.getvalue()

    with pytest.raises(CommandError, match="needs an end-user id"):
        call_command("forget_user", "  ")


def test_the_migration_moves_ids_out_of_the_context_of_older_rows() -> None:
    migration = importlib.import_module("billing.migrations.0006_end_user_and_content_samples")
    make_record("r1", "", user_id="alice-42", language="en")
    make_record("r2", "", user="bob")
    make_record("r3", "", language="de")

    migration.move_end_users_out_of_context(apps, None)

    rows = {r.request_id: (r.end_user, r.context) for r in UsageRecord.objects.all()}
    assert rows == {
        "r1": ("alice-42", {"language": "en"}),
        "r2": ("bob", {}),
        "r3": ("", {"language": "de"}),
    }


# -- the admin ----------------------------------------------------------------


def member_of(role: str) -> Client:
    user = User.objects.create_user(
        role.lower(), f"{role.lower()}@example.com", "pw", is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


CHANGELIST = "/admin/billing/usagerecord/"


def test_an_administrator_forgets_an_end_user_after_confirming() -> None:
    record = make_record("r1", "alice-42")
    make_record("r2", "alice-42")
    make_sample("r1", "alice-42")
    admin = member_of("Administrator")
    action = {"action": "forget_end_users", "_selected_action": [record.pk]}

    confirm = admin.post(CHANGELIST, action)

    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Forget these end users?" in page and "alice-42" in page
    assert UsageRecord.objects.filter(end_user="alice-42").count() == 2  # nothing done yet

    done = admin.post(CHANGELIST, {**action, "post": "yes"}, follow=True)

    assert "Forgot 1 end user(s): erased 1 content sample(s), pseudonymised 2" in (
        done.content.decode()
    )
    assert not UsageRecord.objects.filter(end_user="alice-42").exists()
    assert not ContentSample.objects.exists()


@pytest.mark.parametrize("role", ["Finance", "Operator", "Viewer"])
def test_other_roles_cannot_forget_an_end_user(role: str) -> None:
    record = make_record("r1", "alice-42")
    client = member_of(role)

    response = client.post(
        CHANGELIST, {"action": "forget_end_users", "_selected_action": [record.pk], "post": "yes"}
    )

    assert response.status_code in (200, 302)  # the changelist, without the action
    assert "forget_end_users" not in client.get(CHANGELIST).content.decode()
    assert UsageRecord.objects.get().end_user == "alice-42"


def test_anonymous_cannot_forget_an_end_user() -> None:
    record = make_record("r1", "alice-42")

    response = Client().post(
        CHANGELIST, {"action": "forget_end_users", "_selected_action": [record.pk], "post": "yes"}
    )

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert UsageRecord.objects.get().end_user == "alice-42"


def test_content_samples_are_shown_to_administrators_only_and_never_edited() -> None:
    sample = make_sample("r1", "alice-42")
    url = f"/admin/billing/contentsample/{sample.pk}/change/"

    admin = member_of("Administrator")
    assert admin.get("/admin/billing/contentsample/").status_code == 200
    page = admin.get(url)
    assert page.status_code == 200 and "Summarise the call." in page.content.decode()
    assert admin.get("/admin/billing/contentsample/add/").status_code == 403
    for role in ("Finance", "Operator", "Viewer", "Stakeholder"):
        assert member_of(role).get(url).status_code == 403, role
