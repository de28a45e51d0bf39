"""Experiments (A/B variants of a route) and gradual rollouts (legacy path -> new path).

Imported by `routing.models`, so Django counts them as the routing app's models.
The request path never reads these tables: `routing.experiments.snapshot` puts
what is running into the routing table, and every save bumps its version.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import uuid4

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from routing.models import Deployment, Route


def new_salt() -> str:
    return uuid.uuid4().hex


def default_phases() -> list[int]:
    return [0, 25, 50, 100]


class Experiment(models.Model):
    """An A/B test on one route: each request's end user lands in one variant, always the same."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        PROMOTED = "promoted", "Winner promoted"

    class Metric(models.TextChoices):
        LATENCY = "latency", "Latency"
        COST = "cost", "Cost per request"
        ERROR_RATE = "error_rate", "Error rate"
        QUALITY = "quality", "Quality"
        SATISFACTION = "satisfaction", "Satisfaction"

    name = models.SlugField(
        max_length=100, unique=True, help_text="Written on every usage record of the experiment."
    )
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="experiments")
    description = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    metric = models.CharField(
        max_length=16,
        choices=Metric.choices,
        default=Metric.LATENCY,
        help_text="The metric of interest: the results page leads with it.",
    )
    # Assignment hashes "<salt>:<user>", so two experiments split users independently.
    salt = models.CharField(max_length=32, default=new_salt, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey(
        "Variant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # Two experiments splitting one route's users at once would confound each other.
            models.UniqueConstraint(
                fields=["route"],
                condition=Q(status="running"),
                name="routing_experiment_one_running_per_route",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.route.name}, {self.status})"


class Variant(models.Model):
    """One arm. An empty target is the control: the route as configured."""

    class Kind(models.TextChoices):
        DEPLOYMENT = "deployment", "Deployment first"
        ROUTE = "route", "Another route's chain"
        PARAMETERS = "parameters", "Request parameters"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    name = models.SlugField(max_length=100)
    weight = models.PositiveIntegerField(default=50, help_text="Relative share of users.")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.DEPLOYMENT)
    deployment = models.ForeignKey(
        Deployment,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Deployment kind: tried first, the route's others follow as fallbacks.",
    )
    target_route = models.ForeignKey(
        Route,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Route kind: this route's chain serves the arm.",
    )
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text='Parameters kind: set on the request, e.g. {"temperature": 0.2}.',
    )
    position = models.PositiveSmallIntegerField(default=0, help_text="The first is the control.")

    class Meta:
        ordering = ["experiment", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "name"], name="routing_variant_name_once_per_experiment"
            )
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name}/{self.name} ({self.weight})"

    @property
    def target(self) -> str:
        if self.kind == self.Kind.DEPLOYMENT:
            return str(self.deployment) if self.deployment_id else "the route as configured"
        if self.kind == self.Kind.ROUTE:
            return self.target_route.name if self.target_route else "the route as configured"
        return ", ".join(f"{k}={v}" for k, v in self.parameters.items()) or "no parameters"

    def clean(self) -> None:
        if self.kind != self.Kind.DEPLOYMENT and self.deployment_id:
            raise ValidationError({"deployment": "Only a deployment variant names a deployment."})
        if self.kind != self.Kind.ROUTE and self.target_route_id:
            raise ValidationError({"target_route": "Only a route variant names a route."})
        if not isinstance(self.parameters, dict):
            raise ValidationError({"parameters": 'A JSON object, e.g. {"temperature": 0.2}.'})
        if self.kind != self.Kind.PARAMETERS and self.parameters:
            raise ValidationError({"parameters": "Only a parameters variant sets parameters."})
        problem = parameters_problem(self.parameters)
        if problem:
            raise ValidationError({"parameters": problem})


# Request fields an experiment may not set: they say what is asked and by whom.
NOT_PARAMETERS = {"model", "messages", "stream", "stream_options", "metadata", "user"}


def parameters_problem(parameters: dict[str, object]) -> str:
    """Why these parameters cannot be set on a chat request, or "" when they can."""
    from project.errors import ApiError
    from routing.schema import validate_chat_body

    fixed = sorted(NOT_PARAMETERS & set(parameters))
    if fixed:
        return f"{', '.join(fixed)} cannot be set by an experiment."
    body = {"model": "x", "messages": [{"role": "user", "content": "x"}], **parameters}
    try:
        request = validate_chat_body(body)
    except ApiError as error:
        return error.message
    unknown = sorted(set(parameters) - set(request.params))
    if unknown:
        return f"{', '.join(unknown)}: not a chat completion parameter the gateway passes on."
    return ""


class RolloutQuerySet(models.QuerySet["Rollout"]):
    def live(self) -> RolloutQuerySet:
        """Rollouts with users on the new path, or that may have: what a rollback ends."""
        return self.filter(status__in=[Rollout.Status.RUNNING, Rollout.Status.COMPLETED])

    def applied(self) -> RolloutQuerySet:
        """Rollouts the routing table applies: a completed one sends everyone to the new
        path, a rolled-back one everyone to the legacy path, until it advances again."""
        return self.filter(
            status__in=[
                Rollout.Status.RUNNING,
                Rollout.Status.COMPLETED,
                Rollout.Status.ROLLED_BACK,
            ]
        )


class Rollout(models.Model):
    """Moves a route's traffic from its legacy path to its new path in phases."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed (100%)"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ARCHIVED = "archived", "Archived (no longer applied)"

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="rollouts")
    legacy_route = models.ForeignKey(
        Route,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The legacy path as a route (direct providers), or give legacy chain instead.",
    )
    legacy_chain = models.JSONField(
        default=list,
        blank=True,
        help_text='The legacy path as "provider/model" labels in order, e.g. '
        '["openai/gpt-4o-mini", "google/gemini-2.0-flash"].',
    )
    new_chain = models.JSONField(
        default=list,
        blank=True,
        help_text="The new path (AIMLAPI first) as labels; empty: the route's own chain.",
    )
    phases = models.JSONField(
        default=default_phases, help_text="Percentages of users on the new path, in order."
    )
    percent = models.PositiveSmallIntegerField(default=0, help_text="Users on the new path now.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    baseline_p50_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The legacy path's median latency before the rollout started.",
    )
    baseline_measured_at = models.DateTimeField(null=True, blank=True)
    # Rollback triggers; the defaults are the customer's numbers.
    min_availability_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("99"), help_text="Roll back under this."
    )
    max_latency_factor = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("2"),
        help_text="Roll back when the new path's p50 is over this many times the baseline.",
    )
    max_spend_pct = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=Decimal("150"),
        help_text="Roll back when the spend pace is over this percentage of the budget's pace.",
    )
    min_quality = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("80"),
        help_text="Roll back when the mean quality score (0-100) is under this.",
    )
    min_requests = models.PositiveIntegerField(
        default=20,
        help_text="Requests an arm needs before a trigger may fire or a phase may advance.",
    )
    salt = models.CharField(max_length=32, default=new_salt, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = RolloutQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["route"],
                condition=~Q(status="archived"),
                name="routing_rollout_one_per_route",
            )
        ]

    def __str__(self) -> str:
        return f"rollout of {self.route.name} at {self.percent}% ({self.status})"

    @property
    def subject(self) -> str:
        """The incident's and the alert's subject."""
        return f"rollout:{self.pk}"

    def next_phase(self) -> int | None:
        later = [p for p in self.phases if p > self.percent]
        return min(later) if later else None

    def clean(self) -> None:
        phases = self.phases
        if (
            not isinstance(phases, list)
            or not phases
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in phases)
            or not all(0 <= p <= 100 for p in phases)
            or phases != sorted(set(phases))
        ):
            raise ValidationError(
                {"phases": "Rising whole percentages from 0 to 100, e.g. [0, 25, 50, 100]."}
            )
        for name in ("legacy_chain", "new_chain"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(
                isinstance(v, str) and "/" in v for v in value
            ):
                raise ValidationError({name: 'A list of "provider/model" labels.'})
        known = {str(d) for d in Deployment.objects.select_related("provider")}
        for name in ("legacy_chain", "new_chain"):
            unknown = [label for label in getattr(self, name) if label not in known]
            if unknown:
                raise ValidationError({name: f"No such deployment: {', '.join(unknown)}."})
        if not self.legacy_route_id and not self.legacy_chain:
            raise ValidationError({"legacy_chain": "Give the legacy path: a route or a chain."})
        if self.legacy_route_id and self.legacy_chain:
            raise ValidationError({"legacy_chain": "Give a legacy route or a chain, not both."})

    def legacy_labels(self) -> list[str]:
        if self.legacy_route_id:
            return [str(d) for d in self.legacy_route.chain()]  # type: ignore[union-attr]
        return list(self.legacy_chain)

    def new_labels(self) -> list[str]:
        return list(self.new_chain) or [str(d) for d in self.route.chain()]

    def deployment_ids(self, labels: list[str]) -> list[int]:
        found = {str(d): d.id for d in Deployment.objects.select_related("provider")}
        return [found[label] for label in labels if label in found]


class RolloutEvent(models.Model):
    """The rollout's log: started, advanced, blocked by a gate, rolled back, completed."""

    class Kind(models.TextChoices):
        STARTED = "started", "Started"
        ADVANCED = "advanced", "Advanced"
        BLOCKED = "blocked", "Advance refused by a gate"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ARCHIVED = "archived", "Archived (no longer applied)"
        COMPLETED = "completed", "Completed"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="events")
    created = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    from_percent = models.PositiveSmallIntegerField()
    to_percent = models.PositiveSmallIntegerField()
    automatic = models.BooleanField(default=False, help_text="A rollback trigger did it.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    text = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.rollout_id}: {self.kind} {self.from_percent}% -> {self.to_percent}%"
