"""The admin's monitoring dashboard and performance report (routing/monitoring.py computes them).

Both need the view permission of `routing.Monitoring` (project/roles.py: Administrator,
Operator, Finance and Viewer).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from routing import monitoring
from routing.models import Monitoring


class PeriodForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Inclusive: the report runs to the end of this day (UTC).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("The period starts after it ends.")
        return data


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@admin.register(Monitoring)
class MonitoringAdmin(admin.ModelAdmin):
    """No list of its own: its two pages are the dashboard and the report."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("", view(self.dashboard_view), name="routing_monitoring_changelist"),
            path("report/", view(self.report_view), name="routing_monitoring_report"),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        data = monitoring.dashboard(request.GET.get("period", monitoring.DEFAULT_PERIOD))
        context = {
            **self.admin_site.each_context(request),
            "title": "Monitoring",
            "opts": self.model._meta,
            **data,
        }
        return TemplateResponse(request, "routing/monitoring.html", context)

    def report_view(self, request: HttpRequest) -> HttpResponse:
        """The period's numbers per provider, as a page or (?format=csv) a file."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = PeriodForm(request.GET or None)
        today = timezone.now().date()
        start_day, end_day = today - timedelta(days=6), today
        if form.is_valid():
            start_day = form.cleaned_data["start"] or start_day
            end_day = form.cleaned_data["end"] or end_day
        report = monitoring.period_report(day_start(start_day), day_start(end_day) + timedelta(1))
        if request.GET.get("format") == "csv":
            response = HttpResponse(monitoring.report_csv(report), content_type="text/csv")
            response["Content-Disposition"] = (
                f'attachment; filename="switchboard-performance-{start_day}-{end_day}.csv"'
            )
            return response
        context = {
            **self.admin_site.each_context(request),
            "title": "Performance report",
            "opts": self.model._meta,
            "form": form,
            "report": report,
            "totals": report.total.percentiles(),
            "start_day": start_day,
            "end_day": end_day,
            "csv_query": {**request.GET.dict(), "format": "csv"},
        }
        return TemplateResponse(request, "routing/performance_report.html", context)
