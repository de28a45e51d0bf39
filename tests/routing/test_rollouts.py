"""Gradual rollouts through the gateway: sticky arms, gates, rollback triggers, "roll back now".

The demo's `summary` is the new path (AIMLAPI first); its legacy path here is the
direct providers, so `x-switchboard-provider` says which arm answered.
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from billing.models import UsageRecord
from project.models import Alert, Incident
from routing.experiments.actions import Refused, advance, gates, roll_back
from routing.experiments.jobs import evaluate_rollouts
from routing.models import Rollout, RolloutEvent, Route
from tests.factories import chat, drain_ledger
from tests.servers import SimulatorHandle

LEGACY = ["openai/gpt-4o-mini", "google/gemini-2.0-flash", "anthropic/claude-3-5-haiku-latest"]


def make_rollout(percent: int = 0, **fields: object) -> Rollout:
    """A running rollout of `summary` at ``percent``, its baseline already measured."""
    from django.utils import timezone

    now = timezone.now()
    Rollout.objects.all().delete()  # the demo's draft: one rollout per route
    return Rollout.objects.create(
        route=Route.objects.get(name="summary"),
        legacy_chain=LEGACY,
        status=Rollout.Status.RUNNING,
        percent=percent,
        started_at=now,
        phase_started_at=now,
        baseline_p50_ms=fields.pop("baseline_p50_ms", 50),
        **fields,
    )


def ask(client: openai.OpenAI, user: str) -> str:
    raw = client.chat.completions.with_raw_response.create(model="summary", user=user, **chat())
    return raw.headers["x-switchboard-provider"]


def test_each_user_keeps_their_arm_and_the_records_say_which(
    openai_client: openai.OpenAI,
) -> None:
    rollout = make_rollout(50)
    users = [f"user-{n}" for n in range(30)]

    first = {user: ask(openai_client, user) for user in users}
    again = {user: ask(openai_client, user) for user in users}
    drain_ledger()

    assert first == again
    assert set(first.values()) == {"aimlapi", "openai"}
    for record in UsageRecord.objects.all():
        expected = "new" if first[record.end_user] == "aimlapi" else "legacy"
        assert record.rollout_arm == expected
        assert record.decision["rollout"]["id"] == rollout.pk
        assert record.decision["rollout"]["sticky"] is True


def test_at_zero_percent_everyone_takes_the_legacy_path(openai_client: openai.OpenAI) -> None:
    make_rollout(0)

    assert {ask(openai_client, f"u{n}") for n in range(10)} == {"openai"}


def test_errors_on_the_new_path_roll_back_at_the_next_evaluation_with_one_incident_and_alert(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    rollout = make_rollout(50, min_requests=5)
    demo.fault(provider="aimlapi", mode="error", status=500)
    for n in range(24):
        ask(openai_client, f"user-{n}")  # the new arm's fall back to OpenAI: answered, not by it

    assert evaluate_rollouts() == 1
    assert evaluate_rollouts() == 0  # safe to run twice

    rollout.refresh_from_db()
    assert (rollout.status, rollout.percent) == (Rollout.Status.ROLLED_BACK, 0)
    event = rollout.events.get(kind=RolloutEvent.Kind.ROLLED_BACK)
    assert event.automatic and "availability 0.0% (under 99%)" in event.text
    incident = Incident.objects.get()
    assert (incident.kind, incident.subject, incident.severity) == (
        "rollback",
        f"rollout:{rollout.pk}",
        "critical",
    )
    alert = Alert.objects.get(kind="rollback")
    assert alert.subject == f"rollout:{rollout.pk}" and alert.severity == "critical"
    # Every user is back on the legacy path at once.
    assert {ask(openai_client, f"user-{n}") for n in range(24)} == {"openai"}


def test_a_healthy_new_path_is_not_rolled_back(openai_client: openai.OpenAI) -> None:
    rollout = make_rollout(50, min_requests=5)
    for n in range(24):
        ask(openai_client, f"user-{n}")

    assert evaluate_rollouts() == 0
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.RUNNING and rollout.percent == 50


def test_a_slow_new_path_is_rolled_back_against_the_baseline(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    rollout = make_rollout(50, min_requests=5, baseline_p50_ms=20)
    demo.fault(provider="aimlapi", mode="slow", delay_ms=150)
    for n in range(24):
        ask(openai_client, f"user-{n}")

    assert evaluate_rollouts() == 1
    event = rollout.events.get(kind=RolloutEvent.Kind.ROLLED_BACK)
    assert "latency p50" in event.text and "over 2x baseline" in event.text


def test_a_low_quality_new_path_is_rolled_back(openai_client: openai.OpenAI) -> None:
    rollout = make_rollout(50, min_requests=5)
    for n in range(24):
        ask(openai_client, f"user-{n}")
    drain_ledger()
    UsageRecord.objects.filter(rollout_arm="new").update(quality_score=60)

    assert evaluate_rollouts() == 1
    assert "quality 60.0 (under 80)" in rollout.events.get(kind="rolled_back").text


def test_spend_over_the_budgets_pace_rolls_back(openai_client: openai.OpenAI) -> None:
    from billing.models import Budget

    Budget.objects.filter(scope="global").update(amount_usd=Decimal("1"), hard=False)
    rollout = make_rollout(50, min_requests=5)
    for n in range(24):
        ask(openai_client, f"user-{n}")

    assert evaluate_rollouts() == 1
    assert "spend pace" in rollout.events.get(kind="rolled_back").text


def test_roll_back_now_sends_everyone_back_opens_an_incident_and_is_done_once(
    openai_client: openai.OpenAI,
) -> None:
    from django.contrib.auth.models import User

    rollout = make_rollout(100)
    assert ask(openai_client, "someone") == "aimlapi"
    admin = User.objects.create_user("ops")

    assert roll_back(rollout, "the on-call asked for it", actor=admin)
    assert not roll_back(rollout, "twice")

    assert ask(openai_client, "someone") == "openai"
    assert Incident.objects.get().subject == f"rollout:{rollout.pk}"
    assert Alert.objects.filter(kind="rollback").count() == 1
    assert rollout.events.get(kind="rolled_back").actor == admin


def test_advancing_needs_requests_in_each_arm_and_passing_checks(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    rollout = make_rollout(25, min_requests=5)

    with pytest.raises(Refused, match="the new arm has 0 requests in this phase"):
        advance(rollout)
    assert rollout.events.filter(kind="blocked").count() == 1

    for n in range(40):
        ask(openai_client, f"user-{n}")
    drain_ledger()
    assert gates(rollout).ok
    assert advance(rollout) == "advanced from 25% to 50%"
    rollout.refresh_from_db()
    assert rollout.percent == 50

    demo.fault(provider="aimlapi", mode="error", status=500)
    for n in range(40):
        ask(openai_client, f"user-{n}")
    drain_ledger()
    with pytest.raises(Refused, match="availability check fails"):
        advance(rollout)


def test_a_draft_starts_at_its_first_phase_with_the_baseline_of_the_legacy_path(
    openai_client: openai.OpenAI,
) -> None:
    rollout = make_rollout(0)
    for n in range(10):
        ask(openai_client, f"user-{n}")  # at 0%: the legacy path, measured for the baseline
    drain_ledger()
    route = rollout.route
    rollout.delete()
    draft = Rollout.objects.create(
        route=route, legacy_chain=LEGACY, phases=[0, 10, 100], status="draft"
    )

    assert advance(draft).startswith("started at 0%; baseline p50 ")
    draft.refresh_from_db()
    assert draft.status == "running" and draft.baseline_p50_ms is not None
    assert advance(draft) == "advanced from 0% to 10%"


def test_a_request_without_a_user_is_assigned_per_request_and_says_so(
    openai_client: openai.OpenAI,
) -> None:
    make_rollout(50)
    providers = {
        openai_client.chat.completions.with_raw_response.create(model="summary", **chat()).headers[
            "x-switchboard-provider"
        ]
        for _ in range(20)
    }
    drain_ledger()

    assert providers == {"aimlapi", "openai"}
    assert all(r.decision["rollout"]["sticky"] is False for r in UsageRecord.objects.all())


def test_an_archived_rollout_no_longer_applies_and_makes_room_for_a_new_one(
    openai_client: openai.OpenAI,
) -> None:
    from routing.experiments.actions import archive

    rollout = make_rollout(100)
    with pytest.raises(Refused, match="is running"):
        archive(rollout)
    roll_back(rollout, "drill")
    assert ask(openai_client, "someone") == "openai"

    archive(rollout)

    assert ask(openai_client, "someone") == "aimlapi"  # the route's own chain again
    Rollout.objects.create(route=rollout.route, legacy_chain=LEGACY)


def test_a_rollout_names_only_deployments_that_exist(demo: SimulatorHandle) -> None:
    from django.core.exceptions import ValidationError

    rollout = Rollout(route=Route.objects.get(name="summary"), legacy_chain=["openai/gpt-9"])
    with pytest.raises(ValidationError, match="No such deployment: openai/gpt-9"):
        rollout.full_clean()
