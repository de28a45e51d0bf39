"""The issue's whole story in one run: errors on the new path only, an automatic rollback
to 0%, one incident, and the escalation ladder alerting level by level until someone
acknowledges it.

The gateway and the simulator are real processes; the ladder's clock is frozen and moved
with time-machine; alerts go through the real outbox to a real webhook receiver.
"""

from __future__ import annotations

from datetime import timedelta

import openai
import pytest
import time_machine
from django.contrib.auth.models import User
from django.utils import timezone

from project.incidents import acknowledge
from project.jobs import deliver_alerts, escalate_incidents
from project.models import Alert, Channel, EscalationLevel, Incident
from routing.experiments.jobs import evaluate_rollouts
from routing.models import Rollout
from tests.routing.test_rollouts import ask, make_rollout
from tests.servers import SimulatorHandle, WebhookReceiver


@pytest.fixture
def ladder(webhook: WebhookReceiver) -> WebhookReceiver:
    """Each of the four levels reaches the webhook, so every escalation is seen there."""
    channel = Channel.objects.create(kind="webhook", name="on-call", target=webhook.url())
    for level in EscalationLevel.objects.all():
        level.channels.add(channel)
    return webhook


def levels_heard(webhook: WebhookReceiver) -> list[str]:
    """The ladder's levels the webhook was told of, in order (the rollback's own alert aside)."""
    alerts = [r["body"]["switchboard"] for r in webhook.requests]
    return [a["threshold"] for a in alerts if a["kind"] == "incident"]


def rollback_alerts_heard(webhook: WebhookReceiver) -> int:
    return sum(r["body"]["switchboard"]["kind"] == "rollback" for r in webhook.requests)


def break_the_new_path(client: openai.OpenAI, demo: SimulatorHandle) -> Rollout:
    rollout = make_rollout(50, min_requests=5)
    demo.fault(provider="aimlapi", mode="error", status=500)  # AIMLAPI is the new path
    for n in range(24):
        assert ask(client, f"user-{n}") == "openai"  # every user still answered
    return rollout


def test_errors_on_the_new_path_roll_back_and_escalate_on_time_until_acknowledged(
    openai_client: openai.OpenAI, demo: SimulatorHandle, ladder: WebhookReceiver
) -> None:
    rollout = break_the_new_path(openai_client, demo)

    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert evaluate_rollouts() == 1
        rollout.refresh_from_db()
        assert (rollout.status, rollout.percent) == (Rollout.Status.ROLLED_BACK, 0)
        incident = Incident.objects.get()
        assert (incident.kind, incident.subject) == ("rollback", f"rollout:{rollout.pk}")
        deliver_alerts()
        assert levels_heard(ladder) == ["1"]

        for minutes, heard in ((15, ["1", "2"]), (30, ["1", "2", "3"]), (60, ["1", "2", "3", "4"])):
            clock.move_to(incident.opened_at + timedelta(minutes=minutes, seconds=-1))
            escalate_incidents()
            deliver_alerts()
            assert levels_heard(ladder) == heard[:-1], f"alerted before {minutes} min"
            clock.move_to(incident.opened_at + timedelta(minutes=minutes))
            escalate_incidents()
            deliver_alerts()
            assert levels_heard(ladder) == heard, f"not alerted at {minutes} min"

    assert Incident.objects.count() == 1
    assert Alert.objects.filter(kind="rollback").count() == 1
    assert rollback_alerts_heard(ladder) == 1
    # Everyone is back on the legacy path.
    assert {ask(openai_client, f"user-{n}") for n in range(24)} == {"openai"}


def test_acknowledging_stops_the_ladder_after_the_rollback(
    openai_client: openai.OpenAI, demo: SimulatorHandle, ladder: WebhookReceiver
) -> None:
    break_the_new_path(openai_client, demo)
    on_call = User.objects.create_user("olga", "olga@example.com", "pw", is_staff=True)

    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert evaluate_rollouts() == 1
        incident = Incident.objects.get()
        clock.move_to(incident.opened_at + timedelta(minutes=15))
        escalate_incidents()
        acknowledge(incident, on_call)
        clock.move_to(incident.opened_at + timedelta(hours=2))
        escalate_incidents()
        deliver_alerts()

    assert levels_heard(ladder) == ["1", "2"]
