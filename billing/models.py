"""The usage ledger: one append-only row per client request.

billing never imports routing, so a record names what answered by value
(provider, model, route names and ids) rather than by foreign key.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

from django.db import models
from django.utils import timezone

from billing.budgets import BudgetInfo
from billing.money import MONEY_DECIMAL_PLACES, MONEY_MAX_DIGITS

# Longest end-user id kept; the gateway and forget_user clamp ids to it alike.
END_USER_MAX_LENGTH = 200


class UsageRecord(models.Model):
    class Status(models.TextChoices):
        OK = "ok", "Answered"
        ERROR = "error", "Failed"
        PARTIAL = "partial", "Stream cut after the first byte"
        REJECTED = "rejected", "Refused before any provider"

    request_id = models.CharField(max_length=64, unique=True)  # a retry cannot charge twice
    created = models.DateTimeField(default=timezone.now)
    client_key_id = models.BigIntegerField(null=True, blank=True)
    client_key_name = models.CharField(max_length=100, blank=True)
    route = models.CharField(max_length=200, blank=True)  # a route, or a provider/model asked for
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    deployment_id = models.BigIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, default=Decimal(0)
    )
    direct_cost_usd = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS,
        decimal_places=MONEY_DECIMAL_PLACES,
        null=True,
        blank=True,
        help_text="The same tokens at the model's original vendor's list price; "
        "empty when that price is unknown.",
    )
    latency_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices)
    http_status = models.PositiveSmallIntegerField(default=200)
    error_code = models.CharField(max_length=64, blank=True)
    streamed = models.BooleanField(default=False)
    usage_estimated = models.BooleanField(
        default=False, help_text="Tokens counted by Switchboard because the provider sent none."
    )
    cache_hit = models.BooleanField(
        default=False, help_text="Answered from the response cache: no provider call, no cost."
    )
    deduplicated = models.BooleanField(
        default=False,
        help_text="Answered by an identical request's provider call in flight at the same "
        "time: no call of its own, no cost.",
    )
    attempts = models.JSONField(default=list, help_text="Each provider tried, in order.")
    context = models.JSONField(default=dict, blank=True)
    end_user = models.CharField(
        max_length=END_USER_MAX_LENGTH,
        blank=True,
        help_text="The client's own id of the person behind the request (OpenAI's `user`, "
        "or metadata user_id); 'anon-...' once that person has been forgotten.",
    )
    decision = models.JSONField(
        default=dict,
        blank=True,
        help_text="Why this provider: the routing context, the rule that matched and the "
        "ranked candidates with the reason for each rank.",
    )
    quality_score = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="0-100, from the automated checks of the answer."
    )
    experiment = models.CharField(max_length=100, blank=True)
    arm = models.CharField(max_length=100, blank=True, help_text="The experiment's arm.")
    rollout_arm = models.CharField(
        max_length=20, blank=True, help_text="legacy or new, while a gradual rollout runs."
    )
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Serves spend and savings reports, which always filter by period first.
            models.Index(fields=["created"], name="billing_usage_created"),
            models.Index(fields=["client_key_id", "created"], name="billing_usage_key_created"),
            # Serves forget_user (every row of one end user) and per-user usage over a period.
            models.Index(fields=["end_user", "created"], name="billing_usage_end_user"),
            # Serve per-arm comparisons of experiments and rollouts.
            models.Index(fields=["experiment", "arm"], name="billing_usage_experiment"),
            models.Index(fields=["rollout_arm", "created"], name="billing_usage_rollout"),
        ]
        permissions = [
            (
                "forget_end_user",
                "Can erase an end user's content samples and pseudonymise their usage",
            )
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.provider}/{self.model} ${self.cost_usd}"

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)


class ContentSample(models.Model):
    """A prompt and its completion, redacted, kept only when sampling is switched on.

    The gateway stores none by default (SWITCHBOARD_SAMPLE_RATE is 0); a sampled
    request's emails, phone numbers and card numbers are replaced before it leaves
    the gateway process, and `purge_expired_samples` deletes samples older than
    SWITCHBOARD_SAMPLE_RETENTION_DAYS.
    """

    request_id = models.CharField(max_length=64, unique=True)  # its usage record's; stored once
    created = models.DateTimeField(default=timezone.now)
    end_user = models.CharField(max_length=END_USER_MAX_LENGTH, blank=True)
    route = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=UsageRecord.Status.choices)
    streamed = models.BooleanField(default=False)
    messages = models.JSONField(default=list, help_text="The request's messages, redacted.")
    completion = models.TextField(blank=True, help_text="The answer's text, redacted.")
    redacted = models.BooleanField(
        default=True, help_text="Emails, phone numbers and card numbers were replaced."
    )

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Serves purge_expired_samples, which deletes by age every hour.
            models.Index(fields=["created"], name="billing_sample_created"),
            # Serves forget_user.
            models.Index(fields=["end_user"], name="billing_sample_end_user"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.provider}/{self.model}"


def default_alert_thresholds() -> list[int]:
    return [70, 85, 95]  # the customer's billing-alert plan


class Budget(models.Model):
    """A spending limit. Issue-level enforcement (reservations, alerts) builds on this row."""

    class Scope(models.TextChoices):
        GLOBAL = "global", "Whole gateway"
        KEY = "key", "Client key"
        ROUTE = "route", "Route"
        PROVIDER = "provider", "Provider"

    class Period(models.TextChoices):
        MONTHLY = "monthly", "Monthly"
        DAILY = "daily", "Daily"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    scope_ref = models.CharField(
        max_length=100, blank=True, help_text="Key, route or provider name; empty for global."
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTHLY)
    amount_usd = models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES
    )
    hard = models.BooleanField(
        default=False, help_text="Refuse calls over budget (else alert only)."
    )
    alert_at = models.JSONField(
        default=default_alert_thresholds,
        blank=True,
        help_text="Percentages of the amount that alert, once per period each.",
    )
    degrade_at_pct = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Budget-aware routing: from this percentage on, each route tries its "
        "cheapest candidate first. Empty: never.",
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["scope", "scope_ref", "period"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "scope_ref", "period"], name="billing_budget_one_per_scope"
            )
        ]

    def __str__(self) -> str:
        return f"{self.label} ${self.amount_usd.normalize():f}"

    @property
    def label(self) -> str:
        return " ".join(part for part in (self.scope, self.scope_ref, self.period) if part)

    def info(self) -> BudgetInfo:
        return BudgetInfo(
            id=self.id,
            label=self.label,
            scope=self.scope,
            scope_ref=self.scope_ref,
            period=self.period,
            amount_usd=self.amount_usd,
            hard=self.hard,
            degrade_at_pct=self.degrade_at_pct,
        )
