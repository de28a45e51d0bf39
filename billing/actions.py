"""Writes of billing that have side effects or touch several rows."""

from __future__ import annotations

from decimal import Decimal

from billing.models import Budget


def upsert_budget(
    *, scope: str, scope_ref: str, period: str, amount_usd: Decimal, hard: bool, alert_at: list[int]
) -> str:
    """Create or update the budget of one (scope, ref, period); returns what happened."""
    fields = {"amount_usd": amount_usd, "hard": hard, "alert_at": alert_at}
    budget = Budget.objects.filter(scope=scope, scope_ref=scope_ref, period=period).first()
    if budget is None:
        Budget.objects.create(scope=scope, scope_ref=scope_ref, period=period, **fields)
        return "created"
    if budget.amount_usd == amount_usd and budget.hard == hard and budget.alert_at == alert_at:
        return "unchanged"
    # save(), not update(): the audit log records only saves.
    for name, value in fields.items():
        setattr(budget, name, value)
    budget.save(update_fields=list(fields))
    return "updated"
