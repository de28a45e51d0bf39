from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from billing.budgets import current_spend
from billing.models import Budget, UsageRecord
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
    ]
    list_filter = ["status", "provider", "route", "streamed"]
    search_fields = ["request_id", "client_key_name", "model"]
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the ledger is append-only, written by the gateway

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
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
