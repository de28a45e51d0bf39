"""The alert outbox: an alert is raised once, delivered once, retried, audited, kept secret.

Real database and Redis; the webhook receiver is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connections
from django.test import Client
from django.urls import reverse

from project.alerts import raise_alert
from project.jobs import deliver_alerts
from project.models import Alert, Channel, DeliveryAttempt
from tests.servers import WebhookReceiver

START = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
SECRET = "T0KEN-s3cr3t-9f8e7d6c5b4a"


def make_channel(kind: str, target: str, name: str = "", kinds: list[str] | None = None) -> Channel:
    return Channel.objects.create(
        kind=kind, name=name or f"ops-{kind}", target=target, alert_kinds=kinds or []
    )


def raise_budget_alert(threshold: int = 70, subject: str = "budget:global:monthly") -> Alert:
    alert, _ = raise_alert(
        "budget_threshold",
        subject,
        f"Global monthly budget is {threshold}% spent",
        period="2026-11",
        threshold=threshold,
        body="3500.00 of 5000 USD spent.",
        data={"spent_usd": "3500.00"},
    )
    return alert


def in_threads[T](count: int, work: Callable[[], T]) -> list[T]:
    """Run `work` in `count` threads released at the same instant; each closes its connection."""
    barrier = threading.Barrier(count)

    def run() -> T:
        barrier.wait()
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run) for _ in range(count)]
        return [future.result() for future in futures]


def audit(alert: Alert) -> list[tuple[int, str, bool, int | None]]:
    return [
        (a.attempt, a.channel_name, a.ok, a.status_code)
        for a in DeliveryAttempt.objects.filter(alert=alert).order_by("attempt", "channel_name")
    ]


def test_raising_the_same_crossing_twice_writes_one_row(db: None) -> None:
    first, created_first = raise_alert(
        "budget_threshold", "budget:global:monthly", "70% spent", period="2026-11", threshold=70
    )
    second, created_second = raise_alert(
        "budget_threshold", "budget:global:monthly", "70% again", period="2026-11", threshold="70"
    )

    assert (created_first, created_second) == (True, False)
    assert second.pk == first.pk and second.title == "70% spent"
    assert Alert.objects.count() == 1


def test_a_new_threshold_or_a_new_period_is_a_new_alert(db: None) -> None:
    raise_budget_alert(70)
    raise_budget_alert(85)
    raise_alert("budget_threshold", "budget:global:monthly", "70%", period="2026-12", threshold=70)

    assert Alert.objects.count() == 3


def test_two_workers_raising_the_same_crossing_at_once_write_one_row(
    transactional_db: None,
) -> None:
    results = in_threads(
        6,
        lambda: raise_alert(
            "provider_down",
            "provider:openai",
            "OpenAI is down",
            severity="critical",
            period="2026-11-03T09",
        ),
    )

    assert sorted(created for _, created in results) == [False] * 5 + [True]
    assert len({alert.pk for alert, _ in results}) == 1
    assert Alert.objects.count() == 1


def test_an_alert_is_emailed_to_an_email_channel(db: None) -> None:
    make_channel("email", "ops@example.com")
    alert = raise_budget_alert()

    assert deliver_alerts() == 1

    [message] = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject == "[Switchboard warning] Global monthly budget is 70% spent"
    assert "3500.00 of 5000 USD spent." in message.body and "Threshold: 70" in message.body
    alert.refresh_from_db()
    assert (alert.status, alert.attempts) == (Alert.Status.DELIVERED, 1)
    assert audit(alert) == [(1, "ops-email", True, None)]


def test_a_webhook_gets_a_slack_compatible_body_with_the_alert_in_it(
    db: None, webhook: WebhookReceiver
) -> None:
    make_channel("webhook", webhook.url())
    alert = raise_budget_alert()

    deliver_alerts()

    [request] = webhook.requests
    body = request["body"]
    assert body["text"] == "[WARNING] Global monthly budget is 70% spent"
    assert body["blocks"][0]["text"]["text"].startswith("*Global monthly budget is 70% spent*")
    assert body["switchboard"] == {
        "code": str(alert.code),
        "kind": "budget_threshold",
        "severity": "warning",
        "subject": "budget:global:monthly",
        "period": "2026-11",
        "threshold": "70",
        "title": "Global monthly budget is 70% spent",
        "created": alert.created.isoformat(),
        "data": {"spent_usd": "3500.00"},
    }
    assert audit(alert) == [(1, "ops-webhook", True, 200)]


def test_a_failed_webhook_is_retried_after_its_backoff_without_emailing_twice(
    db: None, webhook: WebhookReceiver
) -> None:
    make_channel("email", "ops@example.com")
    make_channel("webhook", webhook.url())
    webhook.statuses = [500]
    with time_machine.travel(START, tick=False) as clock:
        alert = raise_budget_alert()

        deliver_alerts()

        alert.refresh_from_db()
        assert (alert.status, alert.attempts) == (Alert.Status.PENDING, 1)
        assert alert.next_attempt_at == START + timedelta(seconds=30)
        assert "ops-webhook: HTTP 500" in alert.last_error
        assert audit(alert) == [(1, "ops-email", True, None), (1, "ops-webhook", False, 500)]

        clock.shift(timedelta(seconds=29))
        assert deliver_alerts() == 0  # still backing off
        clock.shift(timedelta(seconds=2))
        assert deliver_alerts() == 1

    alert.refresh_from_db()
    assert (alert.status, alert.attempts, alert.last_error) == (Alert.Status.DELIVERED, 2, "")
    assert len(webhook.requests) == 2
    assert len(mail.outbox) == 1  # only the channel that failed was tried again
    assert audit(alert)[-1] == (2, "ops-webhook", True, 200)


def test_an_alert_that_keeps_failing_backs_off_then_is_marked_failed_after_five_attempts(
    db: None, webhook: WebhookReceiver
) -> None:
    make_channel("webhook", webhook.url())
    webhook.statuses = [503] * 5
    waits = []
    with time_machine.travel(START, tick=False) as clock:
        alert = raise_budget_alert()
        for _ in range(5):
            deliver_alerts()
            alert.refresh_from_db()
            waits.append(round((alert.next_attempt_at - datetime.now(UTC)).total_seconds()))
            clock.shift(timedelta(hours=2))

        assert deliver_alerts() == 0

    assert (alert.status, alert.attempts) == (Alert.Status.FAILED, 5)
    assert waits[:4] == [30, 120, 600, 3600]
    assert [row[0] for row in audit(alert)] == [1, 2, 3, 4, 5]
    assert len(webhook.requests) == 5


def test_a_channel_target_must_match_its_kind(db: None) -> None:
    with pytest.raises(ValidationError) as error:
        Channel(kind="webhook", name="ops", target="ops@example.com").full_clean()
    assert error.value.message_dict == {"target": ["Enter an http(s) URL."]}
    with pytest.raises(ValidationError):
        Channel(kind="email", name="ops", target="https://hooks.example.com/x").full_clean()
    Channel(kind="email", name="ops", target="ops@example.com", alert_kinds=["a"]).full_clean()


def test_a_channel_gets_only_the_kinds_it_lists(db: None, webhook: WebhookReceiver) -> None:
    make_channel("webhook", webhook.url(), kinds=["provider_down"])
    make_channel("email", "finance@example.com", kinds=["budget_threshold"])
    raise_budget_alert()

    deliver_alerts()

    assert len(mail.outbox) == 1 and webhook.requests == []


def test_an_alert_with_no_channel_to_go_to_is_retried_not_marked_delivered(db: None) -> None:
    alert = raise_budget_alert()

    deliver_alerts()

    alert.refresh_from_db()
    assert alert.status == Alert.Status.PENDING
    assert alert.last_error == "no enabled channel receives this kind of alert"


def test_only_one_of_two_claims_on_the_same_alert_wins(db: None) -> None:
    alert = raise_budget_alert()
    now = datetime.now(UTC)

    assert Alert.objects.claim(alert.pk, now) is True
    assert Alert.objects.claim(alert.pk, now) is False


def test_two_delivery_runs_at_the_same_time_send_each_alert_once(
    transactional_db: None, webhook: WebhookReceiver
) -> None:
    make_channel("webhook", webhook.url())
    alerts = [raise_budget_alert(subject=f"budget:key:{n}") for n in range(12)]
    webhook.delay = 0.01  # keeps both runs busy at once

    claimed = in_threads(3, deliver_alerts)

    assert sum(claimed) == 12
    assert sorted(webhook.codes()) == sorted(str(alert.code) for alert in alerts)
    assert Alert.objects.filter(status=Alert.Status.DELIVERED).count() == 12
    assert DeliveryAttempt.objects.count() == 12


def test_an_alert_stuck_delivering_for_over_ten_minutes_is_taken_over(
    db: None, webhook: WebhookReceiver
) -> None:
    make_channel("webhook", webhook.url())
    with time_machine.travel(START, tick=False):
        stuck, busy, spent = (raise_budget_alert(subject=f"budget:key:{n}") for n in range(3))
        claims = {stuck: 11, busy: 5, spent: 11}  # minutes ago
        for alert, minutes in claims.items():
            Alert.objects.filter(pk=alert.pk).update(
                status=Alert.Status.DELIVERING,
                claimed_at=START - timedelta(minutes=minutes),
                attempts=5 if alert is spent else 1,
            )

        deliver_alerts()
        deliver_alerts()  # safe to run twice

    for alert in (stuck, busy, spent):
        alert.refresh_from_db()
    assert (stuck.status, stuck.attempts) == (Alert.Status.DELIVERED, 2)
    assert busy.status == Alert.Status.DELIVERING  # its worker may still be sending
    assert spent.status == Alert.Status.FAILED
    assert webhook.codes() == [str(stuck.code)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_webhook_secret_never_appears_in_the_database_audit_rows_logs_or_the_admin(
    db: None, webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture, admin_client: Client
) -> None:
    from routing.audit import _database_text

    caplog.set_level(logging.DEBUG)
    make_channel("webhook", webhook.url(f"/hooks/T000/{SECRET}"), name="echoes")
    make_channel("webhook", f"http://127.0.0.1:{free_port()}/x?token={SECRET}", name="refused")
    webhook.statuses = [404]
    alert = raise_budget_alert()

    deliver_alerts()

    errors = dict(DeliveryAttempt.objects.values_list("channel_name", "error"))
    assert errors["echoes"] == "HTTP 404: no such hook: …"  # the echoed path, redacted
    assert "ConnectError" in errors["refused"]
    alert.refresh_from_db()
    listing = admin_client.get(reverse("admin:project_channel_changelist")).content.decode()
    page = admin_client.get(reverse("admin:project_alert_change", args=[alert.pk])).content.decode()
    channel = Channel.objects.get(name="echoes")
    form = admin_client.get(reverse("admin:project_channel_change", args=[channel.pk]))
    assert "http://127.0.0.1:" in listing
    for text in [*errors.values(), alert.last_error, caplog.text, listing, page]:
        assert SECRET not in text
    assert SECRET not in form.content.decode() and SECRET not in _database_text()
    assert SECRET in channel.target  # it is there, encrypted, for the transport


@pytest.mark.parametrize("page", ["project_alert", "project_channel"])
def test_anonymous_and_staff_without_permission_cannot_see_the_alert_admin_and_viewers_can(
    db: None, page: str
) -> None:
    url = reverse(f"admin:{page}_changelist")
    staff = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk = Client()
    clerk.force_login(staff)

    assert Client().get(url).status_code == 302  # to the login page
    assert clerk.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename=f"view_{page.split('_')[1]}"))
    assert clerk.get(url).status_code == 200


def test_retry_now_in_the_admin_restarts_a_failed_alert_for_those_allowed_to_change_it(
    db: None, admin_client: Client
) -> None:
    alert = raise_budget_alert()
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.FAILED, attempts=5)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_alert"))
    viewer_client = Client()
    viewer_client.force_login(viewer)
    url = reverse("admin:project_alert_changelist")
    action = {"action": "retry_now", "_selected_action": [alert.pk]}

    viewer_client.post(url, action)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.FAILED

    admin_client.post(url, action)
    alert.refresh_from_db()
    assert (alert.status, alert.attempts) == (Alert.Status.PENDING, 0)


def test_send_a_test_alert_in_the_admin_reaches_the_channel(
    db: None, admin_client: Client, webhook: WebhookReceiver
) -> None:
    channel = make_channel("webhook", webhook.url())

    response = admin_client.post(
        reverse("admin:project_channel_changelist"),
        {"action": "send_test", "_selected_action": [channel.pk]},
        follow=True,
    )

    assert [str(m) for m in response.context["messages"]] == ["ops-webhook: test alert sent."]
    [request] = webhook.requests
    assert request["body"]["switchboard"]["kind"] == "channel_test"
    assert Alert.objects.count() == 0  # a test is not an outbox row


def test_the_admin_stores_a_webhook_url_encrypted_and_keeps_it_when_left_empty(
    db: None, admin_client: Client
) -> None:
    url = f"https://hooks.example.com/services/{SECRET}"
    form = {"name": "ops", "kind": "webhook", "target": url, "alert_kinds": "[]", "enabled": "on"}

    added = admin_client.post(reverse("admin:project_channel_add"), form)

    assert added.status_code == 302
    channel = Channel.objects.get()
    assert channel.target == url and channel.target_display() == "https://hooks.example.com/…"
    kept = admin_client.post(
        reverse("admin:project_channel_change", args=[channel.pk]), {**form, "target": ""}
    )
    assert kept.status_code == 302
    channel.refresh_from_db()
    assert channel.target == url
    bad = admin_client.post(reverse("admin:project_channel_add"), {**form, "target": "nope"})
    assert bad.status_code == 200 and "Enter an http(s) URL." in bad.content.decode()
