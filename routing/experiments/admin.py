"""Admin of experiments and rollouts, with their pages: results (start, stop, promote)
and the rollout's side-by-side arms (advance a phase, roll back now).

Opening a page needs the model's view permission; its buttons (POST) the change
permission (project/roles.py: Operators and Administrators).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from project.admin import AuditedModelAdmin, ReadOnlyAdmin
from routing.experiments import actions, stats, triggers
from routing.models import Experiment, Rollout, RolloutEvent, Variant


class ObjectPage(AuditedModelAdmin):
    """An admin page of one object at ``<id>/<page_slug>/``: the model's view permission
    opens it; a POST is one of its buttons (``act``), which needs the change permission."""

    page_slug = ""

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.page_view)
        name = f"{self.model._meta.app_label}_{self.model._meta.model_name}_{self.page_slug}"
        return [path(f"<path:object_id>/{self.page_slug}/", view, name=name), *super().get_urls()]

    def page_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404(f"No such {self.model._meta.verbose_name}.")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_change_permission(request, obj):
                raise PermissionDenied
            self.act(request, obj)
            return HttpResponseRedirect(request.path)
        return self.render_page(request, obj)

    def page_context(self, request: HttpRequest, obj: Any, title: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "original": obj,
            "may_change": self.has_change_permission(request, obj),
        }

    def render_page(self, request: HttpRequest, obj: Any) -> HttpResponse:
        raise NotImplementedError

    def act(self, request: HttpRequest, obj: Any) -> None:
        raise NotImplementedError


class VariantInline(admin.TabularInline):
    model = Variant
    extra = 0
    fields = ["position", "name", "weight", "kind", "deployment", "target_route", "parameters"]


@admin.register(Experiment)
class ExperimentAdmin(ObjectPage):
    page_slug = "results"
    list_display = ["name", "route", "status", "metric", "started_at", "stopped_at", "results"]
    list_filter = ["status", "route"]
    search_fields = ["name"]
    fields = [
        "name",
        "route",
        "description",
        "metric",
        "status",
        "started_at",
        "stopped_at",
        "winner",
    ]
    readonly_fields = ["status", "started_at", "stopped_at", "winner"]
    inlines = [VariantInline]

    @admin.display(description="Results")
    def results(self, experiment: Experiment) -> str:
        url = reverse("admin:routing_experiment_results", args=[experiment.pk])
        return format_html('<a href="{}">Results</a>', url)

    def render_page(self, request: HttpRequest, experiment: Experiment) -> HttpResponse:
        results = stats.experiment_results(experiment)
        by_arm: dict[str, list[stats.Comparison]] = {}
        for comparison in results.comparisons:
            by_arm.setdefault(comparison.arm, []).append(comparison)
        headline = [c for c in results.comparisons if c.metric == experiment.metric]
        context = {
            **self.page_context(request, experiment, f"Experiment {experiment.name}"),
            "experiment": experiment,
            "variants": list(experiment.variants.all()),
            "results": results,
            "by_arm": by_arm,
            "headline": headline,
        }
        return TemplateResponse(request, "routing/experiment_results.html", context)

    def act(self, request: HttpRequest, experiment: Experiment) -> None:
        action = request.POST.get("action")
        try:
            if action == "start":
                actions.start_experiment(experiment)
                messages.success(request, f"{experiment.name} started.")
            elif action == "stop":
                actions.stop_experiment(experiment)
                messages.success(request, f"{experiment.name} stopped.")
            elif action == "promote":
                chosen = request.POST.get("variant", "")
                variant = (
                    experiment.variants.filter(pk=chosen).first() if chosen.isdigit() else None
                )
                if variant is None:
                    raise actions.Refused("Choose a variant to promote.")
                outcome = actions.promote_variant(experiment, variant)
                messages.success(request, f"{variant.name} promoted: {outcome}.")
            else:
                raise actions.Refused(f"Unknown action {action!r}.")
        except actions.Refused as refused:
            messages.error(request, str(refused))


# A rollout's timeline, as its page shows it: read, never edited.
TIMELINE_FIELDS = ("created", "kind", "from_percent", "to_percent", "automatic", "actor", "text")


class RolloutEventInline(admin.TabularInline):
    model = RolloutEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = TIMELINE_FIELDS
    readonly_fields = TIMELINE_FIELDS  # the timeline is read, never edited


@admin.register(Rollout)
class RolloutAdmin(ObjectPage):
    page_slug = "dashboard"
    list_display = ["route", "status", "percent", "phases", "baseline_p50_ms", "dashboard"]
    list_filter = ["status"]
    fields = [
        "route",
        "legacy_route",
        "legacy_chain",
        "new_chain",
        "phases",
        "status",
        "percent",
        "baseline_p50_ms",
        "baseline_measured_at",
        "min_availability_pct",
        "max_latency_factor",
        "max_spend_pct",
        "min_quality",
        "min_requests",
        "started_at",
        "phase_started_at",
    ]
    # The percentage moves only through the gates or a rollback (the dashboard's buttons).
    readonly_fields = [
        "status",
        "percent",
        "baseline_p50_ms",
        "baseline_measured_at",
        "started_at",
        "phase_started_at",
    ]
    inlines = [RolloutEventInline]
    actions = ["archive"]

    @admin.action(
        description="Archive: stop applying it (draft, completed or rolled back)",
        permissions=["change"],
    )
    def archive(self, request: HttpRequest, queryset: Any) -> None:
        for rollout in queryset:
            try:
                actions.archive(rollout)
                messages.success(request, f"Archived the {rollout}.")
            except actions.Refused as refused:
                messages.error(request, str(refused))

    @admin.display(description="Arms")
    def dashboard(self, rollout: Rollout) -> str:
        url = reverse("admin:routing_rollout_dashboard", args=[rollout.pk])
        return format_html('<a href="{}">Side by side</a>', url)

    def render_page(self, request: HttpRequest, rollout: Rollout) -> HttpResponse:
        now = timezone.now()
        phase_start = rollout.phase_started_at or rollout.started_at or now
        window_start = max(phase_start, now - timedelta(seconds=actions.window_seconds()))
        phase = triggers.evaluate(rollout, phase_start, now)
        window = triggers.evaluate(rollout, window_start, now)
        for name, arm in phase.arms.items():
            records = triggers.arm_records(rollout, phase_start, now).filter(rollout_arm=name)
            arm.satisfaction = stats.satisfaction(stats.counted(records))
        context = {
            **self.page_context(request, rollout, f"Rollout of {rollout.route.name}"),
            "rollout": rollout,
            "arms": [phase.arm("legacy"), phase.arm("new")],
            "phase": phase,
            "window": window,
            "window_seconds": actions.window_seconds(),
            "gate": actions.gates(rollout),
            "next_phase": rollout.next_phase(),
            "legacy_labels": rollout.legacy_labels(),
            "new_labels": rollout.new_labels(),
            "events": rollout.events.select_related("actor")[:20],
        }
        return TemplateResponse(request, "routing/rollout_dashboard.html", context)

    def act(self, request: HttpRequest, rollout: Rollout) -> None:
        action = request.POST.get("action")
        user = request.user if request.user.is_authenticated else None
        try:
            if action == "advance":
                messages.success(request, f"Rollout {actions.advance(rollout, user)}.")
            elif action == "rollback":
                reason = request.POST.get("reason", "").strip() or "rolled back from the admin"
                if actions.roll_back(rollout, reason, actor=user):  # type: ignore[arg-type]
                    messages.success(request, "Rolled back: every user is on the legacy path.")
                else:
                    messages.warning(request, "Nothing to roll back: no user is on the new path.")
            else:
                raise actions.Refused(f"Unknown action {action!r}.")
        except actions.Refused as refused:
            messages.error(request, str(refused))


@admin.register(RolloutEvent)
class RolloutEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created",
        "rollout",
        "kind",
        "from_percent",
        "to_percent",
        "automatic",
        "actor",
    ]
    list_filter = ["kind", "automatic"]
    fields = [
        "rollout",
        "created",
        "kind",
        "from_percent",
        "to_percent",
        "automatic",
        "actor",
        "text",
        "data",
    ]
