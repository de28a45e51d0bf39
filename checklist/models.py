"""The rollout programme: the customer's checklist as rows, its progress and history.

A Checklist holds Phases ("Week 1: Foundation Integration"), each holds Sections
("Day 1-2: Basic Integration"), each holds Items, which nest through `parent`.
Every row has a `key` built from its heading path (checklist/markdown.py), so
re-importing an edited file finds the same rows and keeps their progress.
"""

from __future__ import annotations

from uuid import uuid4

from django.db import models
from django.utils import timezone

KEY_LENGTH = 255


class Checklist(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    notes = models.TextField(blank=True, help_text="The file's lines that are not items.")
    source_name = models.CharField(max_length=200, blank=True, help_text="The imported file.")
    imported_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class Phase(models.Model):
    checklist = models.ForeignKey(Checklist, on_delete=models.CASCADE, related_name="phases")
    key = models.CharField(max_length=KEY_LENGTH)
    title = models.CharField(max_length=200)
    position = models.PositiveIntegerField()
    # Programme days its heading names (day 1 is the start date); empty when it names none.
    start_day = models.SmallIntegerField(null=True, blank=True)
    end_day = models.SmallIntegerField(null=True, blank=True)
    archived = models.BooleanField(default=False, help_text="No longer in the imported file.")

    class Meta:
        ordering = ["checklist", "position"]
        constraints = [
            models.UniqueConstraint(fields=["checklist", "key"], name="checklist_phase_key_once")
        ]

    def __str__(self) -> str:
        return self.title


class Section(models.Model):
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="sections")
    key = models.CharField(max_length=KEY_LENGTH)
    title = models.CharField(max_length=200, blank=True)
    position = models.PositiveIntegerField()
    start_day = models.SmallIntegerField(null=True, blank=True)
    end_day = models.SmallIntegerField(null=True, blank=True)
    archived = models.BooleanField(default=False, help_text="No longer in the imported file.")

    class Meta:
        ordering = ["phase", "position"]
        constraints = [
            models.UniqueConstraint(fields=["phase", "key"], name="checklist_section_key_once")
        ]

    def __str__(self) -> str:
        return self.title or self.phase.title


class ItemQuerySet(models.QuerySet["Item"]):
    def active(self) -> ItemQuerySet:
        return self.filter(archived=False)


class Item(models.Model):
    class Status(models.TextChoices):
        TODO = "todo", "To do"
        IN_PROGRESS = "in_progress", "In progress"
        DONE = "done", "Done"
        BLOCKED = "blocked", "Blocked"
        NOT_APPLICABLE = "n/a", "Not applicable"

    # Statuses that finish an item: it counts as progress and is never overdue.
    CLOSED = (Status.DONE, Status.NOT_APPLICABLE)

    checklist = models.ForeignKey(Checklist, on_delete=models.CASCADE, related_name="items")
    section = models.ForeignKey(Section, on_delete=models.CASCADE, related_name="items")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    key = models.CharField(max_length=KEY_LENGTH)
    title = models.CharField(max_length=300)
    detail = models.CharField(max_length=300, blank=True)
    # Order across the whole checklist, as in the file (depth first).
    position = models.PositiveIntegerField()
    depth = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.TODO)
    archived = models.BooleanField(default=False, help_text="No longer in the imported file.")
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = ItemQuerySet.as_manager()

    class Meta:
        ordering = ["checklist", "position"]
        constraints = [
            models.UniqueConstraint(fields=["checklist", "key"], name="checklist_item_key_once")
        ]

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title

    @property
    def is_closed(self) -> bool:
        return self.status in self.CLOSED
