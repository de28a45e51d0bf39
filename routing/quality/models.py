"""Quality's rows: the automated rules' weights, end users' feedback, judge scores.

Imported by `routing.models`, so they belong to the routing app.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

from billing.models import END_USER_MAX_LENGTH
from routing.quality.scoring import DEFAULT_WEIGHTS, RULE_TITLES


class QualityRule(models.Model):
    """One automated check's weight: what it takes off an answer's 100 when it fires.

    A rule without a row has its default weight; the routing table carries the
    weights, so editing one takes effect on every gateway process within a second.
    """

    class Key(models.TextChoices):
        EMPTY = "empty", RULE_TITLES["empty"]
        TRUNCATED = "truncated", RULE_TITLES["truncated"]
        REFUSAL = "refusal", RULE_TITLES["refusal"]
        INVALID_JSON = "invalid_json", RULE_TITLES["invalid_json"]
        WRONG_LANGUAGE = "wrong_language", RULE_TITLES["wrong_language"]
        SLOW = "slow", RULE_TITLES["slow"]

    key = models.CharField(max_length=32, choices=Key.choices, unique=True)
    weight = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(100)],
        help_text="Points taken off 100 when the rule fires (0-100).",
    )
    enabled = models.BooleanField(default=True, help_text="A disabled rule is not checked.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} -{self.weight}" + ("" if self.enabled else " (off)")

    @property
    def default_weight(self) -> int:
        return DEFAULT_WEIGHTS[self.key]


class Feedback(models.Model):
    """An end user's rating of one answer: one per (request, user), changeable.

    `request_id` names the usage record by value, not by foreign key: the record
    reaches the database through the ledger's drain, possibly after the feedback.
    What it rates (route, provider, model, deployment, arms) is copied from that
    record when the feedback is given, so satisfaction reports need no join.
    """

    class Kind(models.TextChoices):
        THUMBS = "thumbs", "Thumbs up/down"
        STARS = "stars", "1-5 rating"

    request_id = models.CharField(max_length=64)
    user = models.CharField(
        max_length=END_USER_MAX_LENGTH,
        blank=True,
        help_text="The client's own id of the person rating; empty when it sent none.",
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    rating = models.PositiveSmallIntegerField(help_text="Thumbs: 1 up, 0 down. Stars: 1-5.")
    positive = models.BooleanField(help_text="Thumbs up, or 4 or 5 stars.")
    comment = models.TextField(blank=True)
    client_key_id = models.BigIntegerField(null=True, blank=True)
    # Copied from the rated usage record.
    route = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    deployment_id = models.BigIntegerField(null=True, blank=True)
    experiment = models.CharField(max_length=100, blank=True)
    arm = models.CharField(max_length=100, blank=True)
    rollout_arm = models.CharField(max_length=20, blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "user"], name="routing_feedback_one_per_user"
            )
        ]
        indexes = [
            # Serves satisfaction over a window (the API, the Quality page, the checklist)
            # and the per-deployment blend of the quality publisher.
            models.Index(fields=["updated"], name="routing_feedback_updated"),
        ]

    def __str__(self) -> str:
        shown = ("up" if self.rating else "down") if self.kind == "thumbs" else f"{self.rating}/5"
        return f"{self.request_id} {shown} by {self.user or '(anonymous)'}"


class JudgeScore(models.Model):
    """A sampled LLM-as-judge score of one answer (1-10), when judging is switched on.

    Only the score is kept: the question and answer lived in the judge's job.
    """

    request_id = models.CharField(max_length=64, unique=True)
    score = models.PositiveSmallIntegerField(help_text="1-10, as the judge gave it.")
    judge_route = models.CharField(max_length=200)
    route = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    deployment_id = models.BigIntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Serves the Quality page's judge averages over a window.
            models.Index(fields=["created"], name="routing_judgescore_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.score}/10 by {self.judge_route}"
