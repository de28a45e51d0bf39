"""Writes that touch several checklist rows, or have side effects. Views, jobs and
commands call these; they do not save checklist rows themselves."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from checklist import evidence
from checklist.markdown import ParsedChecklist, ParsedItem, parse, slug
from checklist.models import (
    Checklist,
    EvidenceResult,
    FallbackDrill,
    Item,
    ItemEvent,
    Phase,
    Section,
    SignOff,
    SignOffRole,
)

User = AbstractBaseUser | AnonymousUser | None


@dataclass
class ImportReport:
    checklist: Checklist
    counts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{n} {what}" for what, n in sorted(self.counts.items()) if n]
        return ", ".join(parts) or "nothing changed"


@transaction.atomic
def import_checklist(text: str, slug_: str = "", source_name: str = "") -> ImportReport:
    """Create or update a checklist from Markdown (checklist/markdown.py).

    Rows are matched by key (their heading path): a matched row takes the file's
    title, order and schedule but keeps its status, owner and history; a new row
    starts as the file says ([x] done, else to do); a row the file no longer has
    is archived, not deleted, so its history stays. Raises ChecklistSyntaxError
    before changing anything.
    """
    parsed = parse(text)
    checklist, created = Checklist.objects.get_or_create(
        slug=slug_ or slug(parsed.title), defaults={"title": parsed.title}
    )
    report = ImportReport(checklist)
    report.counts["checklists created"] += created
    checklist.title = parsed.title
    checklist.notes = parsed.notes
    checklist.source_name = source_name
    checklist.imported_at = timezone.now()
    checklist.save()
    _sync(checklist, parsed, report)
    _sync_roles(checklist, report)
    report.counts["due dates set"] += schedule(checklist)
    return report


def _sync(checklist: Checklist, parsed: ParsedChecklist, report: ImportReport) -> None:
    phases = {p.key: p for p in checklist.phases.all()}
    sections = {(s.phase.key, s.key): s for s in Section.objects.filter(phase__checklist=checklist)}
    items = {i.key: i for i in checklist.items.all()}
    seen_phases, seen_sections, seen_items = set(), set(), set()
    position = 0

    def upsert(model_rows: dict[Any, Any], lookup: Any, make: Any, values: dict[str, Any]) -> Any:
        row = model_rows.get(lookup)
        name = make.__name__.lower()
        if row is None:
            row = make(**values)
            row.save()
            model_rows[lookup] = row
            report.counts[f"{name}s created"] += 1
            return row
        changed = [k for k, v in values.items() if getattr(row, k) != v]
        if changed:
            for k in changed:
                setattr(row, k, values[k])
            row.save(update_fields=changed)
            report.counts[f"{name}s updated"] += 1
        return row

    def sync_items(section: Section, parent: Item | None, parsed_items: list[ParsedItem]) -> None:
        nonlocal position
        for parsed_item in parsed_items:
            position += 1
            values = {
                "checklist": checklist,
                "section": section,
                "parent": parent,
                "key": parsed_item.key,
                "title": parsed_item.title,
                "detail": parsed_item.detail,
                "position": position,
                "depth": parsed_item.depth,
                "archived": False,
            }
            existing = items.get(parsed_item.key)
            if existing is None:
                values["status"] = Item.Status.DONE if parsed_item.checked else Item.Status.TODO
            if existing is None or not existing.evidence_key:
                # A binding set in the admin stays; an unbound line takes the default one.
                values["evidence_key"] = evidence.BINDINGS.get(parsed_item.title, "")
            item = upsert(items, parsed_item.key, Item, values)
            seen_items.add(item.pk)
            sync_items(section, item, parsed_item.children)

    for phase_position, parsed_phase in enumerate(parsed.phases, start=1):
        phase = upsert(
            phases,
            parsed_phase.key,
            Phase,
            {
                "checklist": checklist,
                "key": parsed_phase.key,
                "title": parsed_phase.title,
                "position": phase_position,
                "start_day": parsed_phase.schedule.start,
                "end_day": parsed_phase.schedule.end,
                "archived": False,
            },
        )
        seen_phases.add(phase.pk)
        for section_position, parsed_section in enumerate(parsed_phase.sections, start=1):
            section = upsert(
                sections,
                (phase.key, parsed_section.key),
                Section,
                {
                    "phase": phase,
                    "key": parsed_section.key,
                    "title": parsed_section.title,
                    "position": section_position,
                    "start_day": parsed_section.schedule.start,
                    "end_day": parsed_section.schedule.end,
                    "archived": False,
                },
            )
            seen_sections.add(section.pk)
            sync_items(section, None, parsed_section.items)

    # One save per row (few rows): the audit log sees only saves (project/auditing.py).
    gone: list[Any] = [
        *checklist.items.filter(archived=False).exclude(pk__in=seen_items),
        *Section.objects.filter(phase__checklist=checklist, archived=False).exclude(
            pk__in=seen_sections
        ),
        *checklist.phases.filter(archived=False).exclude(pk__in=seen_phases),
    ]
    for row in gone:
        row.archived = True
        row.save(update_fields=["archived"])
        report.counts[f"{type(row).__name__.lower()}s archived"] += 1


SIGN_OFF_PHASE = re.compile(r"sign[- ]?off", re.IGNORECASE)


def _sync_roles(checklist: Checklist, report: ImportReport) -> None:
    """Each top-level line of a "Sign-off" phase ("**QA Lead**: Testing and quality
    validation") is a sign-off role; the role owns its line, which its sign-off ticks."""
    lines = (
        checklist.items.active()
        .filter(parent__isnull=True, section__phase__archived=False)
        .select_related("section__phase")
    )
    position = 0
    for line in lines:
        if not SIGN_OFF_PHASE.search(line.section.phase.title):
            continue
        position += 1
        role, created = SignOffRole.objects.get_or_create(
            checklist=checklist,
            name=line.title,
            defaults={"responsibility": line.detail, "position": position, "item": line},
        )
        report.counts["sign-off roles created"] += created
        if not created and (role.responsibility, role.position, role.item_id) != (
            line.detail,
            position,
            line.pk,
        ):
            role.responsibility, role.position, role.item = line.detail, position, line
            role.save()
        if line.owner_role_id is None and line.owner_id is None:
            line.owner_role = role
            line.save(update_fields=["owner_role"])


# -- schedule, status, owner, comments --------------------------------------------------


def schedule(checklist: Checklist) -> int:
    """Set every item's due date from the start date and its headings; returns how many
    changed. An item is due at the end of its section's days, else its phase's."""
    changed = 0
    for item in checklist.items.select_related("section__phase"):
        end = item.section.end_day
        if end is None and item.section.start_day is None:
            end = item.section.phase.end_day
        due = None if end is None else checklist.day(end)
        if item.due_on != due:
            item.due_on = due
            item.save(update_fields=["due_on"])
            changed += 1
    return changed


@transaction.atomic
def set_start_date(checklist: Checklist, start: date | None) -> int:
    checklist.start_date = start
    checklist.save(update_fields=["start_date"])
    return schedule(checklist)


def _who(user: User) -> tuple[Any, str]:
    if user is None or not user.is_authenticated:
        return None, ""
    return user, user.get_username()


@transaction.atomic
def change_item(
    item: Item, user: User, status: str | None = None, comment: str = ""
) -> ItemEvent | None:
    """Set an item's status and/or comment on it, recording who, when, from → to.

    The row is locked while it changes, so two people ticking at once each record
    the status they really moved it from. Nothing to record returns None.
    """
    comment = comment.strip()
    if status is not None and status not in Item.Status.values:
        raise ValidationError(f"unknown status {status!r}")
    locked = Item.objects.select_for_update().get(pk=item.pk)
    if locked.archived:
        raise ValidationError("this item is no longer in the checklist")
    moved = status is not None and status != locked.status
    if not moved and not comment:
        return None
    actor, name = _who(user)
    event = ItemEvent(
        item=locked,
        kind=ItemEvent.Kind.STATUS if moved else ItemEvent.Kind.COMMENT,
        user=actor,
        user_name=name,
        from_status=locked.status,
        to_status=status if moved and status is not None else locked.status,
        comment=comment,
    )
    if moved:
        locked.status = event.to_status
        locked.save(update_fields=["status"])
        item.status = locked.status
    event.save()
    return event


@transaction.atomic
def assign_owner(
    item: Item, user: User, owner: Any = None, role: SignOffRole | None = None, comment: str = ""
) -> ItemEvent | None:
    """Give an item to a user or to a role (not both), recording the change."""
    if owner is not None and role is not None:
        raise ValidationError("an item is owned by a user or by a role, not both")
    if role is not None and role.checklist_id != item.checklist_id:
        raise ValidationError("that role belongs to another checklist")
    locked = (
        Item.objects.select_for_update(of=("self",))
        .select_related("owner", "owner_role")
        .get(pk=item.pk)
    )
    before = locked.owner_display or "nobody"
    if locked.owner_id == getattr(owner, "pk", None) and locked.owner_role_id == getattr(
        role, "pk", None
    ):
        return None
    locked.owner, locked.owner_role = owner, role
    locked.save(update_fields=["owner", "owner_role"])
    item.owner, item.owner_role = owner, role
    actor, name = _who(user)
    note = f"Owner: {before} → {locked.owner_display or 'nobody'}"
    return ItemEvent.objects.create(
        item=locked,
        kind=ItemEvent.Kind.OWNER,
        user=actor,
        user_name=name,
        from_status=locked.status,
        to_status=locked.status,
        comment=f"{note}. {comment.strip()}" if comment.strip() else note,
    )


# -- evidence ------------------------------------------------------------------------------


def evaluate_evidence(
    keys: list[str] | None = None, now: datetime | None = None
) -> list[EvidenceResult]:
    """Run the evidence checks (all, or ``keys``) and keep each result as a new row."""
    now = now or timezone.now()
    results = []
    for key in keys or list(evidence.REGISTRY):
        measured = evidence.measure(key, now)
        results.append(
            EvidenceResult.objects.create(
                key=key,
                status=measured.status,
                value=measured.value[:500],
                threshold=measured.threshold[:200],
                detail=measured.detail[:500],
                measured_at=measured.measured_at,
            )
        )
    return results


# -- fallback drills -------------------------------------------------------------------------


def request_fallback_drill(user: User, environment: str = "staging") -> FallbackDrill:
    """Queue a drill for a worker (the admin's and the web page's button)."""
    import django_rq

    from checklist import jobs  # jobs call actions: imported here, not at the top

    actor, _ = _who(user)
    drill = FallbackDrill.objects.create(environment=environment, requested_by=actor)
    django_rq.enqueue(jobs.run_fallback_drill, drill.pk, job_timeout=900)
    return drill


def run_fallback_drill(drill: FallbackDrill, simulator_url: str = "", progress: Any = None) -> bool:
    """Run a queued drill and keep its results as evidence; False if another worker has it.

    Claimed with a conditional UPDATE (queued → running), so running the job twice
    runs the drill once.
    """
    from checklist import drill as drills

    now = timezone.now()
    claimed = FallbackDrill.objects.filter(pk=drill.pk, status=FallbackDrill.Status.QUEUED).update(
        status=FallbackDrill.Status.RUNNING, started_at=now
    )
    if not claimed:
        return False
    drill.refresh_from_db()
    try:
        chosen, outcomes = drills.run(drill.environment, simulator_url, progress)
    except drills.DrillError as exc:
        drill.status, drill.error = FallbackDrill.Status.ERROR, str(exc)[:500]
    else:
        drill.route = chosen.route.name
        drill.scenarios = [o.as_dict() for o in outcomes]
        passed = all(o.ok for o in outcomes)
        drill.status = FallbackDrill.Status.PASSED if passed else FallbackDrill.Status.FAILED
    drill.finished_at = timezone.now()
    drill.save()
    evaluate_evidence(["fallback_drill"])
    return True


# -- sign-offs -------------------------------------------------------------------------------


def _has_perm(user: User, permission: str) -> bool:
    return isinstance(user, PermissionsMixin) and user.has_perm(permission)


def may_sign(user: User, role: SignOffRole) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and _has_perm(user, "checklist.add_signoff")
        and role.users.filter(pk=user.pk).exists()
    )


def may_revoke(user: User, sign_off: SignOff) -> bool:
    """The signer, or whoever may assign the roles (an Administrator)."""
    if user is None or not user.is_authenticated:
        return False
    return sign_off.user_id == user.pk or _has_perm(user, "checklist.change_signoffrole")


def evidence_snapshot() -> dict[str, dict[str, str]]:
    """Every check measured now, as stored with a sign-off."""
    return {
        result.key: {
            "title": result.title,
            "status": result.status,
            "value": result.value,
            "threshold": result.threshold,
            "detail": result.detail,
            "measured_at": result.measured_at.isoformat(),
        }
        for result in evaluate_evidence()
    }


def sign_off(role: SignOffRole, user: User, comment: str) -> SignOff:
    """Sign ``role`` off as ``user``, who must hold it; ticks the role's checklist line
    and, with the last role, completes the checklist."""
    comment = comment.strip()
    if not may_sign(user, role):
        raise PermissionDenied(f"You do not hold the {role.name} role.")
    if not comment:
        raise ValidationError("Say what you checked: a sign-off needs a comment.")
    snapshot = evidence_snapshot()  # measured outside the transaction: it reads Redis too
    actor, name = _who(user)
    try:
        with transaction.atomic():
            signed = SignOff.objects.create(
                role=role, user=actor, user_name=name, comment=comment, evidence=snapshot
            )
            if role.item is not None:
                change_item(role.item, user, Item.Status.DONE, f"Signed off: {comment}")
            _update_completion(role.checklist)
    except IntegrityError:
        raise ValidationError(f"{role.name} is already signed off.") from None
    return signed


@transaction.atomic
def revoke_sign_off(sign_off: SignOff, user: User, reason: str) -> SignOff:
    reason = reason.strip()
    if not may_revoke(user, sign_off):
        raise PermissionDenied("Only the signer or an administrator may revoke a sign-off.")
    if not reason:
        raise ValidationError("Say why: revoking a sign-off needs a reason.")
    locked = (
        SignOff.objects.select_for_update(of=("self",))
        .select_related("role__item")
        .get(pk=sign_off.pk)
    )
    if locked.revoked_at is not None:
        raise ValidationError("This sign-off is already revoked.")
    actor, name = _who(user)
    locked.revoked_at, locked.revoked_by, locked.revoked_by_name = timezone.now(), actor, name
    locked.revoke_reason = reason
    locked.save()
    if locked.role.item is not None:
        change_item(locked.role.item, user, Item.Status.IN_PROGRESS, f"Sign-off revoked: {reason}")
    _update_completion(locked.role.checklist)
    return locked


def _update_completion(checklist: Checklist) -> None:
    roles = checklist.roles.count()
    signed = SignOff.objects.active().filter(role__checklist=checklist).count()
    complete = roles > 0 and signed == roles
    if complete and checklist.completed_at is None:
        checklist.completed_at = timezone.now()
    elif not complete:
        checklist.completed_at = None
    else:
        return
    checklist.save(update_fields=["completed_at"])
