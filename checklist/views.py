"""The stakeholders' pages under /checklist/: the checklist, evidence and sign-offs.

Function views: sign-in required, a permission per action (project/roles.py),
objects fetched through helpers that raise 404, Django forms, redirect after POST.
Writes go through checklist.actions.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from checklist import actions
from checklist.evidence import REGISTRY
from checklist.forms import ItemForm, RevokeForm, SignOffForm, StartDateForm
from checklist.models import (
    Checklist,
    EvidenceResult,
    FallbackDrill,
    Item,
    Phase,
    Section,
    SignOff,
    SignOffRole,
)

FILTERS = {
    "": "All",
    "mine": "Mine",
    "overdue": "Overdue",
    "blocked": "Blocked",
    "failing": "Failing evidence",
}


def get_checklist(slug: str) -> Checklist:
    return get_object_or_404(Checklist, slug=slug)


def get_item(checklist: Checklist, code: UUID) -> Item:
    return get_object_or_404(Item.objects.active(), checklist=checklist, code=code)


def back(request: HttpRequest, checklist: Checklist, anchor: str = "") -> HttpResponseRedirect:
    """To the page the form was on (a filtered list, an item), else the checklist."""
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = reverse("checklist:detail", args=[checklist.slug])
    return HttpResponseRedirect(f"{target}#{anchor}" if anchor else target)


@dataclass
class PhaseView:
    phase: Phase
    sections: list[tuple[str, list[Item]]] = field(default_factory=list)
    total: int = 0
    closed: int = 0

    @property
    def percent(self) -> int:
        return round(100 * self.closed / self.total) if self.total else 0


@dataclass
class RoleView:
    role: SignOffRole
    holders: list[str]
    active: SignOff | None
    may_sign: bool
    may_revoke: bool


def evidence_panel(latest: dict[str, EvidenceResult], items: list[Item]) -> list[dict[str, Any]]:
    backs: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.evidence_key:
            backs[item.evidence_key].append(item)
    return [
        {"key": key, "check": check, "result": latest.get(key), "items": backs.get(key, [])}
        for key, check in REGISTRY.items()
    ]


def role_panel(checklist: Checklist, user: Any) -> list[RoleView]:
    roles = checklist.roles.prefetch_related(
        "users",
        Prefetch("sign_offs", SignOff.objects.active(), to_attr="active_sign_offs"),
    )
    panel = []
    for role in roles:
        active = role.active_sign_offs[0] if role.active_sign_offs else None  # type: ignore[attr-defined]
        panel.append(
            RoleView(
                role=role,
                holders=[u.get_full_name() or u.get_username() for u in role.users.all()],
                active=active,
                may_sign=active is None and actions.may_sign(user, role),
                may_revoke=active is not None and actions.may_revoke(user, active),
            )
        )
    return panel


def filtered(checklist: Checklist, user: Any, name: str, latest: dict[str, EvidenceResult]) -> Any:
    items = checklist.items.active().select_related("owner", "owner_role", "section__phase")
    if name == "mine":
        return items.filter(pk__in=Item.objects.owned_by(user).values("pk"))
    if name == "overdue":
        return items.overdue(timezone.localdate())
    if name == "blocked":
        return items.filter(status=Item.Status.BLOCKED)
    if name == "failing":
        failing = [key for key, result in latest.items() if result.status == "fail"]
        return items.filter(evidence_key__in=failing)
    return items


def phases_of(checklist: Checklist, items: list[Item], all_items: list[Item]) -> list[PhaseView]:
    """Phases in order, each with its sections' shown items and its whole progress."""
    views = {p.pk: PhaseView(p) for p in checklist.phases.filter(archived=False)}
    for item in all_items:
        view = views.get(item.section.phase_id)
        if view is not None:
            view.total += 1
            view.closed += item.is_closed
    by_section: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_section[item.section_id].append(item)
    for section in Section.objects.filter(phase__in=list(views), archived=False):
        if by_section.get(section.pk):
            views[section.phase_id].sections.append((section.title, by_section[section.pk]))
    return [v for v in views.values() if v.total]


@login_required
@permission_required("checklist.view_item", raise_exception=True)
def index(request: HttpRequest) -> HttpResponse:
    checklists = list(Checklist.objects.all())
    if len(checklists) == 1:
        return redirect("checklist:detail", checklists[0].slug)
    return render(request, "checklist/index.html", {"checklists": checklists})


@login_required
@permission_required("checklist.view_item", raise_exception=True)
def checklist_detail(request: HttpRequest, slug: str) -> HttpResponse:
    checklist = get_checklist(slug)
    name = request.GET.get("filter", "")
    if name not in FILTERS:
        name = ""
    latest = EvidenceResult.objects.latest_by_key()
    all_items = list(checklist.items.active().select_related("owner", "owner_role", "section"))
    shown = list(filtered(checklist, request.user, name, latest))
    today = timezone.localdate()
    for item in shown:
        item.overdue = item.is_overdue(today)  # type: ignore[attr-defined]
        item.evidence = latest.get(item.evidence_key)  # type: ignore[attr-defined]
    roles = role_panel(checklist, request.user)
    total = len(all_items)
    closed = sum(1 for item in all_items if item.is_closed)
    context = {
        "checklist": checklist,
        "phases": phases_of(checklist, shown, all_items),
        "filters": FILTERS,
        "filter": name,
        "shown": len(shown),
        "total": total,
        "percent": round(100 * closed / total) if total else 0,
        "closed": closed,
        "evidence": evidence_panel(latest, all_items),
        "roles": roles,
        "signed": sum(1 for r in roles if r.active),
        "drill": FallbackDrill.objects.first(),
        "statuses": Item.Status.choices,
        "may_change": request.user.has_perm("checklist.change_item"),
        "may_measure": request.user.has_perm("checklist.add_evidenceresult"),
        "may_drill": request.user.has_perm("checklist.add_fallbackdrill"),
        "may_schedule": request.user.has_perm("checklist.change_checklist"),
        "start_form": StartDateForm(initial={"start_date": checklist.start_date}),
        "here": request.get_full_path(),
    }
    return render(request, "checklist/checklist.html", context)


@login_required
@permission_required("checklist.view_item", raise_exception=True)
def item_detail(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    checklist = get_checklist(slug)
    item = get_item(checklist, code)
    latest = EvidenceResult.objects.latest_by_key()
    context = {
        "checklist": checklist,
        "item": item,
        "events": item.events.all()[:100],
        "evidence": latest.get(item.evidence_key),
        "history": EvidenceResult.objects.filter(key=item.evidence_key)[:20]
        if item.evidence_key
        else [],
        "children": item.children.active(),
        "statuses": Item.Status.choices,
        "may_change": request.user.has_perm("checklist.change_item"),
        "overdue": item.is_overdue(timezone.localdate()),
        "here": request.get_full_path(),
    }
    return render(request, "checklist/item.html", context)


@require_POST
@login_required
@permission_required("checklist.change_item", raise_exception=True)
def change_item(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    checklist = get_checklist(slug)
    item = get_item(checklist, code)
    form = ItemForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for e in form.non_field_errors()) or "Check it.")
        return back(request, checklist, f"item-{item.code}")
    try:
        event = actions.change_item(
            item, request.user, form.cleaned_data["status"] or None, form.cleaned_data["comment"]
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if event is not None:
            messages.success(request, f"{item.title}: {item.get_status_display().lower()}.")
    return back(request, checklist, f"item-{item.code}")


@require_POST
@login_required
@permission_required("checklist.change_checklist", raise_exception=True)
def set_start(request: HttpRequest, slug: str) -> HttpResponse:
    checklist = get_checklist(slug)
    form = StartDateForm(request.POST)
    if form.is_valid():
        changed = actions.set_start_date(checklist, form.cleaned_data["start_date"])
        messages.success(request, f"Programme start saved; {changed} due dates changed.")
    else:
        messages.error(request, "Enter a date.")
    return back(request, checklist)


@require_POST
@login_required
@permission_required("checklist.add_evidenceresult", raise_exception=True)
def measure_evidence(request: HttpRequest, slug: str) -> HttpResponse:
    checklist = get_checklist(slug)
    results = actions.evaluate_evidence()
    counts: dict[str, int] = defaultdict(int)
    for result in results:
        counts[result.status] += 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    messages.success(request, f"Evidence measured: {summary}.")
    return back(request, checklist, "evidence")


@require_POST
@login_required
@permission_required("checklist.add_fallbackdrill", raise_exception=True)
def run_drill(request: HttpRequest, slug: str) -> HttpResponse:
    checklist = get_checklist(slug)
    actions.request_fallback_drill(request.user)
    messages.success(
        request, "Fallback drill queued; a worker runs it in about a minute. Reload to see it."
    )
    return back(request, checklist, "evidence")


@require_POST
@login_required
@permission_required("checklist.add_signoff", raise_exception=True)
def sign(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    checklist = get_checklist(slug)
    role = get_object_or_404(SignOffRole, checklist=checklist, code=code)
    if not actions.may_sign(request.user, role):
        raise PermissionDenied(f"You do not hold the {role.name} role.")
    form = SignOffForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A sign-off needs a comment: say what you checked.")
        return back(request, checklist, "sign-offs")
    try:
        actions.sign_off(role, request.user, form.cleaned_data["comment"])
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{role.name} signed off.")
    return back(request, checklist, "sign-offs")


@require_POST
@login_required
def revoke(request: HttpRequest, slug: str, code: UUID) -> HttpResponse:
    checklist = get_checklist(slug)
    sign_off = get_object_or_404(SignOff.objects.active(), role__checklist=checklist, code=code)
    if not actions.may_revoke(request.user, sign_off):
        raise PermissionDenied("Only the signer or an administrator may revoke a sign-off.")
    form = RevokeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Revoking a sign-off needs a reason.")
        return back(request, checklist, "sign-offs")
    try:
        actions.revoke_sign_off(sign_off, request.user, form.cleaned_data["reason"])
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{sign_off.role.name}: sign-off revoked.")
    return back(request, checklist, "sign-offs")


@login_required
@permission_required("checklist.view_item", raise_exception=True)
def report(request: HttpRequest, slug: str) -> HttpResponse:
    """The whole programme on one printable page (print CSS; the browser saves it as PDF)."""
    checklist = get_checklist(slug)
    latest = EvidenceResult.objects.latest_by_key()
    items = list(checklist.items.active().select_related("owner", "owner_role", "section__phase"))
    for item in items:
        item.evidence = latest.get(item.evidence_key)  # type: ignore[attr-defined]
    closed = sum(1 for item in items if item.is_closed)
    context = {
        "checklist": checklist,
        "phases": phases_of(checklist, items, items),
        "evidence": evidence_panel(latest, items),
        "roles": role_panel(checklist, None),
        "sign_offs": SignOff.objects.filter(role__checklist=checklist).select_related("role"),
        "total": len(items),
        "closed": closed,
        "percent": round(100 * closed / len(items)) if items else 0,
        "generated": timezone.now(),
    }
    return render(request, "checklist/report.html", context)


CSV_HEADER = [
    "kind", "phase", "section", "title", "detail", "status", "owner", "due",
    "evidence", "evidence status", "evidence value", "signed by", "signed at", "comment",
    "revoked at", "revoked by", "revoke reason",
]  # fmt: skip


@login_required
@permission_required("checklist.view_item", raise_exception=True)
def export_csv(request: HttpRequest, slug: str) -> HttpResponse:
    """Every item's status, then every sign-off (revoked ones too), one row each."""
    checklist = get_checklist(slug)
    latest = EvidenceResult.objects.latest_by_key()
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{checklist.slug}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_HEADER)
    items = checklist.items.active().select_related("owner", "owner_role", "section__phase")
    for item in items:
        result = latest.get(item.evidence_key)
        writer.writerow(
            [
                "item",
                item.section.phase.title,
                item.section.title,
                item.title,
                item.detail,
                item.get_status_display(),
                item.owner_display,
                item.due_on.isoformat() if item.due_on else "",
                item.evidence_key,
                result.status if result else "",
                (result.value or result.detail) if result else "",
                *[""] * 6,
            ]
        )
    sign_offs = SignOff.objects.filter(role__checklist=checklist).select_related("role")
    for sign_off in sign_offs.order_by("role__position", "signed_at"):
        writer.writerow(
            [
                "sign-off",
                "",
                "",
                sign_off.role.name,
                sign_off.role.responsibility,
                "revoked" if sign_off.revoked_at else "signed",
                "",
                "",
                "",
                "",
                "",
                sign_off.user_name,
                sign_off.signed_at.isoformat(),
                sign_off.comment,
                sign_off.revoked_at.isoformat() if sign_off.revoked_at else "",
                sign_off.revoked_by_name,
                sign_off.revoke_reason,
            ]
        )
    return response
