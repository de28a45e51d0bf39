from __future__ import annotations

import csv
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from billing import dashboard, decision, reports
from billing.actions import forget_user
from billing.budgets import current_spend
from billing.models import Budget, ContentSample, UsageRecord
from project.admin import AuditedModelAdmin
from project.redis import sync_client


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created",
        "request_id",
        "client_key_name",
        "route",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "status",
        "attempt_count",
        "end_user",
    ]
    list_filter = ["status", "provider", "route", "streamed", "cache_hit", "deduplicated"]
    search_fields = ["request_id", "client_key_name", "model", "=end_user"]
    date_hierarchy = "created"
    actions = ["forget_end_users"]
    readonly_fields = ["routing_decision"]

    @admin.display(description="Routing decision")
    def routing_decision(self, record: UsageRecord) -> str:
        return decision.explain(record.decision)

    def get_urls(self) -> list[URLPattern]:
        savings = self.admin_site.admin_view(self.savings_view)
        return [path("savings/", savings, name="billing_savings"), *super().get_urls()]

    def savings_view(self, request: HttpRequest) -> HttpResponse:
        """The savings report against the 70% target, as a page or (?format=csv) a file."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = SavingsForm(request.GET or None)
        group_by, start, end = "day", None, None
        if form.is_valid():
            group_by = form.cleaned_data["group_by"] or "day"
            start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        rows, total = reports.savings(group_by, _day(start), _day(end, 1))
        if request.GET.get("format") == "csv":
            return savings_csv(rows, total, group_by)
        widest = max([r.direct_usd for r in rows] + [r.actual_usd for r in rows] + [Decimal(1)])
        context = {
            **self.admin_site.each_context(request),
            "title": "Savings against direct providers",
            "opts": self.model._meta,
            "form": form,
            "rows": [
                (row, _pct(row.actual_usd, widest), _pct(row.direct_usd, widest)) for row in rows
            ],
            "total": total,
            "target": reports.TARGET_SAVING_PCT,
            "csv_query": {**request.GET.dict(), "format": "csv"},
        }
        return TemplateResponse(request, "billing/savings.html", context)

    @admin.action(
        description="Forget this end user: erase their samples, pseudonymise their usage",
        permissions=["forget"],
    )
    def forget_end_users(
        self, request: HttpRequest, queryset: QuerySet[UsageRecord]
    ) -> HttpResponse | None:
        """The end users of the selected records, after a confirmation page."""
        users = sorted(
            set(
                queryset.exclude(end_user="")
                .exclude(end_user__startswith="anon-")
                .values_list("end_user", flat=True)
            )
        )
        if not users:
            messages.warning(request, "The selected records name no end user to forget.")
            return None
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Forget these end users?",
                "opts": self.model._meta,
                "users": [
                    (
                        user,
                        UsageRecord.objects.filter(end_user=user).count(),
                        ContentSample.objects.filter(end_user=user).count(),
                    )
                    for user in users
                ],
                "queryset": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "billing/forget_confirmation.html", context)
        results = [forget_user(user) for user in users]
        messages.success(
            request,
            f"Forgot {len(results)} end user(s): erased "
            f"{sum(r.samples_erased for r in results)} content sample(s), pseudonymised "
            f"{sum(r.records_pseudonymised for r in results)} usage record(s).",
        )
        return None

    def has_forget_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.forget_end_user")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the ledger is append-only, written by the gateway

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ContentSample)
class ContentSampleAdmin(admin.ModelAdmin):
    """Read-only: samples are written by the gateway and erased by retention or forget_user.

    Deleting one stays possible (for Administrator, the only role with the permission)
    for a sample that kept something redaction did not catch.
    """

    list_display = ["created", "request_id", "end_user", "route", "provider", "model", "status"]
    list_filter = ["provider", "route", "status", "streamed"]
    search_fields = ["request_id", "=end_user"]
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SavingsForm(forms.Form):
    group_by = forms.ChoiceField(choices=[(g, g) for g in reports.GROUPINGS], required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


def _day(day: date | None, offset: int = 0) -> datetime | None:
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=offset), time.min, tzinfo=UTC)


def _pct(value: Decimal, widest: Decimal) -> int:
    return int(value / widest * 100)


def savings_csv(
    rows: list[reports.SavingsRow], total: reports.SavingsRow, group_by: str
) -> HttpResponse:
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = (
        f'attachment; filename="switchboard-savings-by-{group_by}.csv"'
    )
    writer = csv.writer(response)
    writer.writerow(
        [
            group_by,
            "requests",
            "actual_usd",
            "direct_usd",
            "saving_usd",
            "saving_pct",
            "unpriced_requests",
        ]
    )
    for row in [*rows, total]:
        writer.writerow(
            [
                row.bucket,
                row.requests,
                f"{row.actual_usd:f}",
                f"{row.direct_usd:f}",
                f"{row.saving_usd:f}",
                "" if row.saving_pct is None else f"{row.saving_pct:f}",
                row.unpriced_requests,
            ]
        )
    return response


@admin.register(Budget)
class BudgetAdmin(AuditedModelAdmin):
    list_display = [
        "scope",
        "scope_ref",
        "period",
        "amount_usd",
        "hard",
        "alert_at",
        "spent",
        "remaining",
        "burn_per_day",
    ]
    list_filter = ["scope", "period", "hard"]
    change_list_template = "billing/budget_change_list.html"  # adds the dashboard link

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.dashboard_view)
        return [path("dashboard/", view, name="billing_dashboard"), *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """This month's spend and forecast against the budget, by provider and model; savings."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Spend dashboard",
            "opts": self.model._meta,
            **dashboard.dashboard(),
        }
        return TemplateResponse(request, "billing/dashboard.html", context)

    @admin.display(description="Spent this period")
    def spent(self, budget: Budget) -> str:
        spent, reserved = self._spend(budget)
        held = f" (+${reserved:.4f} in flight)" if reserved else ""
        return f"${spent:.4f}{held}"

    @admin.display(description="Remaining")
    def remaining(self, budget: Budget) -> str:
        spent, reserved = self._spend(budget)
        return f"${budget.amount_usd - spent - reserved:.4f}"

    @admin.display(description="Burn rate / day")
    def burn_per_day(self, budget: Budget) -> str:
        now = timezone.now()
        start = budget.info().period_start(now)
        days = max((now - start).total_seconds() / 86400, 1 / 24)
        return f"${self._spend(budget)[0] / Decimal(str(days)):.4f}"

    def _spend(self, budget: Budget) -> tuple[Decimal, Decimal]:
        # Live from Redis, shared by every gateway process.
        return current_spend(sync_client(), budget.info(), timezone.now())
