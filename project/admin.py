from __future__ import annotations

from collections.abc import Callable
from functools import partial, wraps
from typing import Any, cast

from auditlog.mixins import AuditlogHistoryAdminMixin
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
)
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django_rq.admin import QueueAdmin
from django_rq.models import Dashboard

from project.alerts import retry_alerts, send_test_alert
from project.incidents import (
    acknowledge,
    add_note,
    contacts_text,
    ladder,
    reschedule_open_incidents,
    resolve,
)
from project.models import (
    RUNBOOKS,
    Alert,
    Channel,
    DeliveryAttempt,
    EscalationLevel,
    Incident,
    IncidentEvent,
)
from project.runbooks import render_runbook


class AuditedModelAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    """A ModelAdmin with an "Audit log" button on the change page, and the object's
    entries (project/auditing.py) behind it, for those who may read the audit log."""

    change_form_template = "project/change_form_audit_log.html"

    def auditlog_history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        if not request.user.has_perm("auditlog.view_logentry"):
            raise PermissionDenied
        response: HttpResponse = super().auditlog_history_view(request, object_id, extra_context)
        return response


class ChannelForm(forms.ModelForm):
    target = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="An email address, or the webhook URL (http or https). Stored encrypted; "
        "a URL is shown again only by its host. Leave empty to keep the current one.",
    )

    class Meta:
        model = Channel
        fields = ["name", "kind", "alert_kinds", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("target"):
            self.instance.target = data["target"]  # validated by Channel.clean
        elif not self.instance.target_encrypted:
            self.add_error("target", "Give the email address or the webhook URL.")
        return data


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that workers and actions write and nobody edits: listed and opened, never
    added, changed or deleted here (health probes, evidence, sign-offs, drills)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Channel)
class ChannelAdmin(AuditedModelAdmin):
    # The list never shows a webhook URL whole: its path usually is the secret.
    form = ChannelForm
    list_display = ["name", "kind", "destination", "receives", "enabled", "created"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    fields = ["name", "kind", "target", "destination", "alert_kinds", "enabled"]
    readonly_fields = ["destination"]
    actions = ["send_test"]

    @admin.display(description="Sends to")
    def destination(self, channel: Channel) -> str:
        return channel.target_display()

    @admin.display(description="Alert kinds")
    def receives(self, channel: Channel) -> str:
        return ", ".join(channel.alert_kinds) or "all"

    @admin.action(description="Send a test alert", permissions=["change"])
    def send_test(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        for channel in queryset:
            error = send_test_alert(channel)
            if error:
                self.message_user(
                    request, f"{channel.name}: the test alert failed ({error}).", messages.ERROR
                )
            else:
                self.message_user(request, f"{channel.name}: test alert sent.", messages.SUCCESS)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("created", "attempt", "channel_name", "ok", "status_code", "error", "duration_ms")
    readonly_fields = fields
    ordering = ["created", "id"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """The outbox, read-only: rows are written by raise_alert() and the delivery job."""

    list_display = [
        "created",
        "kind",
        "severity",
        "subject",
        "period",
        "threshold",
        "status",
        "attempts",
        "next_attempt_at",
    ]
    list_filter = ["status", "severity", "kind", "attempts"]
    search_fields = ["kind", "subject", "title"]
    date_hierarchy = "created"
    readonly_fields = (
        "code",
        "kind",
        "severity",
        "subject",
        "period",
        "threshold",
        "title",
        "body",
        "data",
        "created",
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_at",
        "delivered_at",
        "last_error",
    )
    fields = readonly_fields
    inlines = [DeliveryAttemptInline]
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Deleting a row would let its crossing alert again this period.
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        # The change form is read-only for everyone; retrying needs the change permission.
        return request.user.has_perm("project.change_alert")

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = retry_alerts(queryset)
        self.message_user(
            request, f"{count} alert(s) will be sent at the next delivery run.", messages.SUCCESS
        )


def needs_rq_permission(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Anonymous users go on to the admin's own redirect to its login page.
        if request.user.is_authenticated and not request.user.has_perm("django_rq.admin"):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return guarded


if admin.site.is_registered(Dashboard):
    admin.site.unregister(Dashboard)


@admin.register(Dashboard)
class JobQueuesAdmin(QueueAdmin):
    """RQ's dashboard, for roles holding django_rq's own `admin` permission.

    django_rq asks only for `is_staff`, and its pages empty queues, requeue and
    delete jobs: a Viewer or a Stakeholder must not reach them.
    """

    def get_urls(self) -> list[URLPattern]:
        return [
            URLPattern(url.pattern, needs_rq_permission(url.callback), url.default_args, url.name)
            for url in super().get_urls()
        ]


# -- incidents and the escalation ladder ---------------------------------------------------


@admin.register(EscalationLevel)
class EscalationLevelAdmin(admin.ModelAdmin):
    """The four levels of the ladder: their names, times and contacts (never more or fewer)."""

    list_display = ["number", "name", "starts_after_minutes", "contacts"]
    list_display_links = ["number", "name"]
    fields = ["number", "name", "starts_after_minutes", "users", "channels"]
    readonly_fields = ["number"]
    filter_horizontal = ["users", "channels"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Contacts")
    def contacts(self, level: EscalationLevel) -> str:
        return contacts_text(level)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # A changed time applies to the incidents already climbing the ladder.
        reschedule_open_incidents()


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("at", "kind", "actor", "text")
    readonly_fields = fields
    ordering = ["at", "id"]
    verbose_name = "timeline entry"
    verbose_name_plural = "Timeline"


class ResolveForm(forms.Form):
    root_cause = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="What caused it, and what was done. Required to resolve.",
    )


ACTS = ("acknowledge", "note", "resolve")


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Incidents, read-only but for what people do to them: acknowledge, note, resolve.

    Those go through project.incidents and need `project.change_incident`; the board
    (open incidents with their timelines) and the runbooks need the view permission.
    """

    list_display = [
        "opened_at",
        "severity",
        "kind",
        "title",
        "status",
        "level",
        "escalate_at",
        "acknowledged_by",
    ]
    list_filter = ["status", "severity", "kind"]
    search_fields = ["title", "subject", "summary", "root_cause"]
    date_hierarchy = "opened_at"
    readonly_fields = (
        "code",
        "kind",
        "severity",
        "title",
        "subject",
        "summary",
        "status",
        "runbook_link",
        "opened_at",
        "level",
        "escalate_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "root_cause",
        "data",
    )
    fields = readonly_fields
    inlines = [IncidentEventInline]
    actions = ["acknowledge_selected", "resolve_selected"]
    change_form_template = "project/incident_change_form.html"
    change_list_template = "project/incident_change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the timeline is the record of what happened

    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("project.change_incident")

    @admin.display(description="Runbook")
    def runbook_link(self, incident: Incident) -> str:
        if not incident.runbook:
            return "—"
        return format_html(
            '<a href="{}">{}</a>',
            reverse(f"admin:project_runbook_{incident.runbook}"),
            RUNBOOKS[incident.runbook],
        )

    def get_urls(self) -> list[URLPattern]:
        site = self.admin_site
        runbooks = [
            path(
                f"runbooks/{slug}/",
                site.admin_view(partial(self.runbook_view, slug=slug)),
                name=f"project_runbook_{slug}",
            )
            for slug in RUNBOOKS
        ]
        return [
            path("board/", site.admin_view(self.board_view), name="project_incident_board"),
            path(
                "<path:object_id>/act/",
                site.admin_view(self.act_view),
                name="project_incident_act",
            ),
            *runbooks,
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "may_act": self.has_act_permission(request),
            "resolve_form": ResolveForm(),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def board_view(self, request: HttpRequest) -> HttpResponse:
        """Every unresolved incident, worst first, with its timeline and what may be done."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        incidents = (
            Incident.objects.unresolved()
            .select_related("acknowledged_by")
            .prefetch_related(Prefetch("events", IncidentEvent.objects.select_related("actor")))
            .order_by("status", "opened_at")
        )
        worst_first = sorted(incidents, key=lambda i: SEVERITY_ORDER.index(i.severity))
        context = {
            **self.admin_site.each_context(request),
            "title": "Open incidents",
            "opts": self.model._meta,
            "incidents": worst_first,
            "may_act": self.has_act_permission(request),
            "resolve_form": ResolveForm(),
            "ladder": ladder(),
        }
        return TemplateResponse(request, "project/incident_board.html", context)

    def act_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST only: acknowledge, add a note or resolve one incident, then go back."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_act_permission(request):
            raise PermissionDenied
        incident = get_object_or_404(Incident, pk=object_id)
        act = request.POST.get("act", "")
        user = cast(User, request.user)
        try:
            if act == "acknowledge":
                if acknowledge(incident, user, request.POST.get("text", "").strip()):
                    messages.success(request, f"Acknowledged: {incident.title}")
                else:
                    messages.warning(request, "It was acknowledged already (or resolved).")
            elif act == "note":
                add_note(incident, user, request.POST.get("text", ""))
                messages.success(request, "Note added.")
            elif act == "resolve":
                resolve(incident, user, request.POST.get("root_cause", ""))
                messages.success(request, f"Resolved: {incident.title}")
            else:
                return HttpResponseBadRequest(f"act must be one of {', '.join(ACTS)}")
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}):
            target = reverse("admin:project_incident_change", args=[incident.pk])
        return redirect(target)

    def runbook_view(self, request: HttpRequest, slug: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": f"Runbook: {RUNBOOKS[slug]}",
            "opts": self.model._meta,
            "runbook": render_runbook(slug),
            "source": f"docs/runbooks/{slug}.md",
        }
        return TemplateResponse(request, "project/runbook.html", context)

    @admin.action(description="Acknowledge (stops the escalation ladder)", permissions=["act"])
    def acknowledge_selected(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        user = cast(User, request.user)
        done = sum(acknowledge(incident, user) for incident in queryset)
        self.message_user(request, f"{done} incident(s) acknowledged.", messages.SUCCESS)

    @admin.action(description="Resolve, with the root cause", permissions=["act"])
    def resolve_selected(
        self, request: HttpRequest, queryset: QuerySet[Incident]
    ) -> HttpResponse | None:
        form = ResolveForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            user = cast(User, request.user)
            resolved = 0
            for incident in queryset.exclude(status=Incident.Status.RESOLVED):
                resolve(incident, user, form.cleaned_data["root_cause"])
                resolved += 1
            self.message_user(request, f"{resolved} incident(s) resolved.", messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Resolve incidents",
            "opts": self.model._meta,
            "queryset": queryset,
            "form": form,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "project/incident_resolve.html", context)


SEVERITY_ORDER: list[str] = [
    Incident.Severity.CRITICAL,
    Incident.Severity.MAJOR,
    Incident.Severity.MINOR,
]
