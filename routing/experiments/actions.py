"""Writes of experiments and rollouts: start, stop, promote, advance, roll back.

Each state change is a conditional UPDATE on the state it was read in, so two
admins (or an admin and the trigger job) cannot both move a rollout: one wins,
the other is told it changed. `config_changed()` then bumps the routing table's
version when the transaction commits, and every gateway process follows within
``TABLE_CHECK_SECONDS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from project.alerts import raise_alert
from project.auditing import record_update
from project.incidents import open_incident
from routing.experiments import triggers
from routing.models import Experiment, Rollout, RolloutEvent, RouteStep, Variant
from routing.signals import config_changed

log = logging.getLogger(__name__)


class Refused(Exception):
    """The action cannot be done in the object's current state; the message says why."""


def _move(model: Any, obj: Any, expected: dict[str, Any], **changes: Any) -> None:
    """UPDATE ``obj`` to ``changes`` only if it still holds ``expected``; audited."""
    moved = model.objects.filter(pk=obj.pk, **expected).update(**changes)
    if not moved:
        raise Refused(f"{obj} changed meanwhile; reload the page and try again.")
    record_update(obj, **changes)
    for name, value in changes.items():
        setattr(obj, name, value)
    config_changed()


# -- experiments -------------------------------------------------------------------------


@transaction.atomic
def start_experiment(experiment: Experiment) -> None:
    if experiment.status != Experiment.Status.DRAFT:
        raise Refused(f"{experiment.name} is {experiment.status}; only a draft starts.")
    if not experiment.variants.exists():
        raise Refused(f"{experiment.name} has no variants.")
    if Experiment.objects.filter(route=experiment.route, status=Experiment.Status.RUNNING).exists():
        raise Refused(f"Another experiment already runs on {experiment.route.name}.")
    _move(
        Experiment,
        experiment,
        {"status": Experiment.Status.DRAFT},
        status=Experiment.Status.RUNNING,
        started_at=timezone.now(),
    )


@transaction.atomic
def stop_experiment(experiment: Experiment) -> None:
    if experiment.status != Experiment.Status.RUNNING:
        raise Refused(f"{experiment.name} is not running.")
    _move(
        Experiment,
        experiment,
        {"status": Experiment.Status.RUNNING},
        status=Experiment.Status.STOPPED,
        stopped_at=timezone.now(),
    )


@transaction.atomic
def promote_variant(experiment: Experiment, variant: Variant) -> str:
    """Make ``variant`` the route's way for good, end the experiment; returns what changed.

    A deployment variant moves its deployment to the head of the route's chain; a
    route variant gives the route that route's chain (both as audited RouteStep
    rows). A parameters variant has no place on a route, so the promoted
    experiment keeps setting its parameters on every request of the route.
    """
    if variant.experiment_id != experiment.pk:
        raise Refused(f"{variant.name} is not a variant of {experiment.name}.")
    if experiment.status not in (Experiment.Status.RUNNING, Experiment.Status.STOPPED):
        raise Refused(
            f"{experiment.name} is {experiment.status}; promote a running or stopped one."
        )
    route = experiment.route
    current = [s.deployment_id for s in route.steps.order_by("position")]
    if variant.kind == Variant.Kind.DEPLOYMENT and variant.deployment_id:
        wanted = [variant.deployment_id, *(d for d in current if d != variant.deployment_id)]
        outcome = f"{variant.deployment} now heads {route.name}'s chain"
    elif variant.kind == Variant.Kind.ROUTE and variant.target_route_id:
        target = variant.target_route
        wanted = [s.deployment_id for s in target.steps.order_by("position")]  # type: ignore[union-attr]
        outcome = f"{route.name} now uses {target}'s chain"
    elif variant.kind == Variant.Kind.PARAMETERS and variant.parameters:
        wanted = current
        outcome = f"every request of {route.name} now sets {variant.target}"
    else:
        wanted = current
        outcome = f"{route.name} stays as configured (the control won)"
    if wanted != current:
        route.steps.all().delete()
        for position, deployment_id in enumerate(wanted, start=1):  # one save each: audited
            RouteStep.objects.create(route=route, deployment_id=deployment_id, position=position)
    _move(
        Experiment,
        experiment,
        {"status": experiment.status},
        status=Experiment.Status.PROMOTED,
        winner=variant,
        stopped_at=experiment.stopped_at or timezone.now(),
    )
    log.info("experiment %s: %s promoted; %s", experiment.name, variant.name, outcome)
    return outcome


# -- rollouts ----------------------------------------------------------------------------


def _event(
    rollout: Rollout,
    kind: str,
    before: int,
    text: str,
    actor: User | None = None,
    automatic: bool = False,
    data: dict[str, Any] | None = None,
) -> RolloutEvent:
    return RolloutEvent.objects.create(
        rollout=rollout,
        kind=kind,
        from_percent=before,
        to_percent=rollout.percent,
        text=text,
        actor=actor,
        automatic=automatic,
        data=data or {},
    )


def window_seconds() -> int:
    from django.conf import settings

    return int(settings.SWITCHBOARD.get("ROLLOUT_WINDOW_SECONDS", 300))


@dataclass(frozen=True)
class Gate:
    ok: bool
    reasons: list[str]
    evaluation: triggers.Evaluation | None = None


def gates(rollout: Rollout) -> Gate:
    """May the rollout move to its next phase? The current phase's checks must pass and
    each arm that takes traffic must have had ``min_requests`` in it."""
    if rollout.status == Rollout.Status.DRAFT:
        return Gate(True, [])
    if rollout.status == Rollout.Status.COMPLETED:
        return Gate(False, ["the rollout is complete: every user is on the new path"])
    reasons = []
    if rollout.percent == 0 or rollout.status == Rollout.Status.ROLLED_BACK:
        if rollout.baseline_p50_ms is None:
            reasons.append(
                f"no baseline: the legacy path answered no request of {rollout.route.name} in "
                f"the last {triggers.BASELINE_HOURS} hours; send traffic at 0% first"
            )
        return Gate(not reasons, reasons)
    start = rollout.phase_started_at or rollout.started_at or timezone.now()
    evaluation = triggers.evaluate(rollout, start)
    shares = {"new": rollout.percent, "legacy": 100 - rollout.percent}
    for arm, share in shares.items():
        count = evaluation.arm(arm).requests
        if share and count < rollout.min_requests:
            reasons.append(
                f"the {arm} arm has {count} requests in this phase; the gate needs "
                f"{rollout.min_requests}"
            )
    reasons += [f"{c.name} check fails: {c.text}" for c in evaluation.failed]
    return Gate(not reasons, reasons, evaluation)


def advance(rollout: Rollout, actor: User | None = None) -> str:
    """Start a draft, or move to the next phase if the gates pass (else Refused, logged)."""
    rollout.refresh_from_db()
    before, now = rollout.percent, timezone.now()
    with transaction.atomic():
        if rollout.status == Rollout.Status.DRAFT:
            return _start(rollout, actor, now)
    if rollout.baseline_p50_ms is None and rollout.status != Rollout.Status.COMPLETED:
        baseline = triggers.measure_baseline(rollout, now)
        if baseline is not None:
            _move(
                Rollout,
                rollout,
                {"baseline_p50_ms": None},
                baseline_p50_ms=baseline,
                baseline_measured_at=now,
            )
    gate = gates(rollout)
    if not gate.ok:
        text = "; ".join(gate.reasons)
        _event(rollout, RolloutEvent.Kind.BLOCKED, before, text, actor)
        raise Refused(f"Not advanced: {text}.")
    with transaction.atomic():
        return _next_phase(rollout, actor, before, now)


def _start(rollout: Rollout, actor: User | None, now: datetime) -> str:
    before = rollout.percent
    baseline = triggers.measure_baseline(rollout, now)
    _move(
        Rollout,
        rollout,
        {"status": Rollout.Status.DRAFT},
        status=Rollout.Status.RUNNING,
        percent=rollout.phases[0],
        started_at=now,
        phase_started_at=now,
        baseline_p50_ms=baseline,
        baseline_measured_at=now,
    )
    text = f"started at {rollout.percent}%; baseline p50 " + (
        f"{baseline} ms" if baseline is not None else "not measured yet (no legacy traffic)"
    )
    _event(rollout, RolloutEvent.Kind.STARTED, before, text, actor)
    return text


def _next_phase(rollout: Rollout, actor: User | None, before: int, now: datetime) -> str:
    target = rollout.next_phase()
    if rollout.status == Rollout.Status.ROLLED_BACK:
        target = next((p for p in rollout.phases if p > 0), None)
    if target is None:
        _move(
            Rollout,
            rollout,
            {"status": Rollout.Status.RUNNING, "percent": before},
            status=Rollout.Status.COMPLETED,
        )
        text = f"completed at {rollout.percent}%"
        _event(rollout, RolloutEvent.Kind.COMPLETED, before, text, actor)
        return text
    _move(
        Rollout,
        rollout,
        {"status": rollout.status, "percent": before},
        status=Rollout.Status.RUNNING,
        percent=target,
        phase_started_at=now,
    )
    text = f"advanced from {before}% to {target}%"
    _event(rollout, RolloutEvent.Kind.ADVANCED, before, text, actor)
    return text


@transaction.atomic
def archive(rollout: Rollout) -> None:
    """Take a finished rollout (draft, completed or rolled back) out of the routing table,
    so that the route may have a new one; the route's own chain serves it again."""
    finished = [Rollout.Status.DRAFT, Rollout.Status.COMPLETED, Rollout.Status.ROLLED_BACK]
    if rollout.status not in finished:
        raise Refused(f"The {rollout} is running: roll it back or complete it first.")
    _move(Rollout, rollout, {"status": rollout.status}, status=Rollout.Status.ARCHIVED)


def roll_back(
    rollout: Rollout,
    reason: str,
    *,
    actor: User | None = None,
    automatic: bool = False,
    data: dict[str, Any] | None = None,
) -> bool:
    """Send every user back to the legacy path now; open an incident and alert.

    Returns False when the rollout was not live (already rolled back, or a draft):
    running it twice rolls back once, opens one incident and raises one alert.
    The rollback commits first, on its own: traffic safety must not wait for, or
    depend on, the incident and the alert, which follow in their own transaction.
    """
    with transaction.atomic():
        before = rollout.percent
        moved = (
            Rollout.objects.live()
            .filter(pk=rollout.pk)
            .update(status=Rollout.Status.ROLLED_BACK, percent=0, phase_started_at=timezone.now())
        )
        if not moved:
            return False
        record_update(rollout, status=Rollout.Status.ROLLED_BACK, percent=0)
        rollout.refresh_from_db()
        event = _event(
            rollout,
            RolloutEvent.Kind.ROLLED_BACK,
            before,
            reason,
            actor,
            automatic,
            data,
        )
        config_changed()
    who = "automatically" if automatic else f"by {actor}" if actor else "manually"
    title = f"Rollout of {rollout.route.name} rolled back {who}: {reason}"
    with transaction.atomic():
        open_incident(
            "rollback",
            rollout.subject,
            title,
            severity="critical",
            summary=(
                f"Every user of {rollout.route.name} is back on the legacy path "
                f"(was {before}% on the new path)."
            ),
            data={"rollout": rollout.pk, "from_percent": before, **(data or {})},
        )
        raise_alert(
            "rollback",
            rollout.subject,
            title,
            severity="critical",
            period=f"event-{event.pk}",  # one alert per rollback
            body=f"Reason: {reason}\nRolled back from {before}% to 0%.",
            data={"rollout": rollout.pk, "from_percent": before, **(data or {})},
        )
    log.warning("rollout %s rolled back %s: %s", rollout.pk, who, reason)
    return True


def evaluate_and_roll_back(rollout: Rollout) -> triggers.Evaluation | None:
    """The trigger job's step for one rollout: the sliding window's checks; a failure rolls back."""
    if rollout.status != Rollout.Status.RUNNING or rollout.percent == 0:
        return None
    now = timezone.now()
    start = max(
        now - timedelta(seconds=window_seconds()),
        rollout.phase_started_at or rollout.started_at or now,
    )
    evaluation = triggers.evaluate(rollout, start, now)
    if evaluation.failed:
        data = {c.name: c.value for c in evaluation.checks}
        roll_back(rollout, evaluation.summary(), automatic=True, data=data)
    return evaluation
