from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern
from django_rq.admin import QueueAdmin
from django_rq.models import Dashboard

from project.alerts import retry_alerts, send_test_alert
from project.models import Alert, Channel, DeliveryAttempt


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
