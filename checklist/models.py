"""The rollout programme: the customer's checklist as rows, its progress and history.

A Checklist holds Phases ("Week 1: Foundation Integration"), each holds Sections
("Day 1-2: Basic Integration"), each holds Items, which nest through `parent`.
Every row has a `key` built from its heading path (checklist/markdown.py), so
re-importing an edited file finds the same rows and keeps their progress.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import uuid4

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

KEY_LENGTH = 255


class Checklist(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    notes = models.TextField(blank=True, help_text="The file's lines that are not items.")
    source_name = models.CharField(max_length=200, blank=True, help_text="The imported file.")
    imported_at = models.DateTimeField(null=True, blank=True)
    start_date = models.DateField(
        null=True,
        blank=True,
        help_text="Day 1 of the programme: headings' days and weeks become due dates from it.",
    )
    # Set when the last sign-off role signs, cleared when a sign-off is revoked.
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_complete(self) -> bool:
        return self.completed_at is not None

    def day(self, number: int) -> date | None:
        """The date of programme day ``number`` (day 1 is the start date; day 0 the day before)."""
        if self.start_date is None:
            return None
        return self.start_date + timedelta(days=number - 1)


class SignOffRole(models.Model):
    """One of the checklist's sign-off roles ("Engineering Lead"), and the users who hold it.

    A role can also own items: "mine" is what a user owns and what their roles own.
    """

    checklist = models.ForeignKey(Checklist, on_delete=models.CASCADE, related_name="roles")
    name = models.CharField(max_length=100)
    responsibility = models.CharField(max_length=300, blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    # The checklist line this role's sign-off ticks ("Engineering Lead: System architecture ...").
    item = models.OneToOneField(
        "Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="signoff_role"
    )
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="checklist_roles"
    )
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["checklist", "position", "name"]
        constraints = [
            models.UniqueConstraint(fields=["checklist", "name"], name="checklist_role_once")
        ]

    def __str__(self) -> str:
        return self.name


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

    def open(self) -> ItemQuerySet:
        return self.exclude(status__in=Item.CLOSED)

    def overdue(self, today: date) -> ItemQuerySet:
        return self.open().filter(due_on__lt=today)

    def owned_by(self, user: object) -> ItemQuerySet:
        """Items the user owns, or one of the user's sign-off roles owns."""
        return self.filter(Q(owner=user) | Q(owner_role__users=user)).distinct()


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
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="checklist_items",
    )
    owner_role = models.ForeignKey(
        SignOffRole, null=True, blank=True, on_delete=models.SET_NULL, related_name="items"
    )
    evidence_key = models.CharField(
        max_length=64,
        blank=True,
        help_text="The live check (checklist/evidence.py) that proves this line, if any.",
    )
    # From the checklist's start date and the item's section (else phase) heading;
    # kept on the row so that "overdue" is one indexed query.
    due_on = models.DateField(null=True, blank=True)
    archived = models.BooleanField(default=False, help_text="No longer in the imported file.")
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = ItemQuerySet.as_manager()

    class Meta:
        ordering = ["checklist", "position"]
        constraints = [
            models.UniqueConstraint(fields=["checklist", "key"], name="checklist_item_key_once")
        ]
        indexes = [
            # Serves the "overdue" filter: open items of a checklist due before today.
            models.Index(fields=["checklist", "due_on"], name="checklist_item_due"),
        ]

    def __str__(self) -> str:
        return self.text

    @property
    def owner_display(self) -> str:
        if self.owner is not None:
            return self.owner.get_full_name() or self.owner.get_username()
        return self.owner_role.name if self.owner_role is not None else ""

    def is_overdue(self, today: date) -> bool:
        return self.due_on is not None and self.due_on < today and not self.is_closed

    @property
    def text(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title

    @property
    def is_closed(self) -> bool:
        return self.status in self.CLOSED


class ItemEvent(models.Model):
    """One change of an item: its status (from → to), its owner, or a comment alone."""

    class Kind(models.TextChoices):
        STATUS = "status", "Status changed"
        COMMENT = "comment", "Comment"
        OWNER = "owner", "Owner changed"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # Who, kept by name too: the history outlives a deleted user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    user_name = models.CharField(max_length=150, blank=True)
    from_status = models.CharField(max_length=12, choices=Item.Status.choices, blank=True)
    to_status = models.CharField(max_length=12, choices=Item.Status.choices, blank=True)
    comment = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            # Serves an item's history, newest first.
            models.Index(fields=["item", "-created"], name="checklist_event_item"),
        ]

    def __str__(self) -> str:
        who = self.user_name or "system"
        if self.kind == self.Kind.STATUS:
            return f"{who}: {self.from_status} → {self.to_status}"
        return f"{who}: {self.get_kind_display().lower()}"


class EvidenceResultQuerySet(models.QuerySet["EvidenceResult"]):
    def latest_by_key(self) -> dict[str, EvidenceResult]:
        """The newest result of each check (a dozen keys: one indexed query each)."""
        from checklist.evidence import REGISTRY

        latest: dict[str, EvidenceResult] = {}
        for key in REGISTRY:
            result = self.filter(key=key).order_by("-measured_at", "-id").first()
            if result is not None:
                latest[key] = result
        return latest

    def thin(self, before: datetime) -> int:
        """Keep only the last result of each check per day before ``before``; return how
        many were deleted. Recent history stays whole; older history stays a daily trend."""
        kept: dict[tuple[str, date], int] = {}
        doomed = []
        old = self.filter(measured_at__lt=before).order_by("-measured_at", "-id")
        for pk, key, measured_at in old.values_list("id", "key", "measured_at").iterator():
            day = (key, measured_at.date())
            if day in kept:
                doomed.append(pk)
            else:
                kept[day] = pk
        deleted = 0
        for start in range(0, len(doomed), 1000):
            deleted += self.filter(id__in=doomed[start : start + 1000]).delete()[0]
        return deleted


class EvidenceResult(models.Model):
    """One measurement of one evidence check; every measurement is kept, as history."""

    class Status(models.TextChoices):
        PASS = "pass", "Pass"
        FAIL = "fail", "Fail"
        UNKNOWN = "unknown", "Unknown"

    key = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices)
    value = models.CharField(max_length=500, blank=True)
    threshold = models.CharField(max_length=200, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    measured_at = models.DateTimeField()
    created = models.DateTimeField(default=timezone.now)

    objects = EvidenceResultQuerySet.as_manager()

    class Meta:
        ordering = ["-measured_at", "-id"]
        indexes = [
            # Serves "the latest result of this check" and a check's history.
            models.Index(fields=["key", "-measured_at"], name="checklist_evidence_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.key}: {self.status} ({self.value or self.detail})"

    @property
    def title(self) -> str:
        from checklist.evidence import REGISTRY

        entry = REGISTRY.get(self.key)
        return entry.title if entry else self.key


class FallbackDrillQuerySet(models.QuerySet["FallbackDrill"]):
    def finished(self) -> FallbackDrillQuerySet:
        return self.filter(finished_at__isnull=False).order_by("-finished_at", "-id")


class FallbackDrill(models.Model):
    """One run of `manage.py fallback_drill`: each failure scenario against the staging
    providers, the provider expected to answer, and the one that did."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        ERROR = "error", "Could not run"

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    environment = models.CharField(max_length=8, default="staging")
    route = models.CharField(max_length=64, blank=True)
    # [{"name", "faults", "expected", "answered_by", "ok", "attempts", "detail"}, ...]
    scenarios = models.JSONField(default=list, blank=True)
    error = models.CharField(max_length=500, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = FallbackDrillQuerySet.as_manager()

    class Meta:
        # Running a drill is adding one: checklist.add_fallbackdrill (Operator, Administrator).
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        when = f"{self.created:%Y-%m-%d %H:%M}"
        return f"Fallback drill {when}: {self.get_status_display().lower()}"

    @property
    def passed_count(self) -> int:
        return sum(1 for s in self.scenarios if s.get("ok"))


class SignOffQuerySet(models.QuerySet["SignOff"]):
    def active(self) -> SignOffQuerySet:
        return self.filter(revoked_at__isnull=True)


class SignOff(models.Model):
    """A role's sign-off: who signed, why, and the evidence as it stood at that moment.

    Revoking keeps the row (with who, when and why) and lets the role sign again.
    """

    role = models.ForeignKey(SignOffRole, on_delete=models.CASCADE, related_name="sign_offs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    user_name = models.CharField(max_length=150)
    comment = models.TextField()
    # {check key: {"status", "value", "threshold", "detail", "measured_at"}} when signed.
    evidence = models.JSONField(default=dict)
    signed_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_by_name = models.CharField(max_length=150, blank=True)
    revoke_reason = models.TextField(blank=True)
    code = models.UUIDField(default=uuid4, unique=True, editable=False)

    objects = SignOffQuerySet.as_manager()

    class Meta:
        ordering = ["-signed_at", "-id"]
        constraints = [
            # Two holders of a role signing at once: one sign-off stands.
            models.UniqueConstraint(
                fields=["role"],
                condition=Q(revoked_at__isnull=True),
                name="checklist_signoff_one_active_per_role",
            )
        ]

    def __str__(self) -> str:
        state = " (revoked)" if self.revoked_at else ""
        return f"{self.role.name} signed by {self.user_name}{state}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
