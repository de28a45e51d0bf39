"""The savings report: what Switchboard paid against what the vendors' list prices would have cost.

Saving = (direct - actual) / direct over the same records. Records whose
direct price is unknown are counted in their own column and left out of the
percentage, so an unpriced model can neither inflate nor hide a saving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncMonth, TruncWeek

from billing.models import UsageRecord

TARGET_SAVING_PCT = Decimal(70)  # the customer's business case
GROUPINGS = {
    "day": TruncDay("created"),
    "week": TruncWeek("created"),
    "month": TruncMonth("created"),
    "route": F("route"),
    "model": F("model"),
    "provider": F("provider"),
}


@dataclass(frozen=True)
class SavingsRow:
    bucket: str
    requests: int
    actual_usd: Decimal  # all answered requests
    priced_actual_usd: Decimal  # those with a known direct price
    direct_usd: Decimal
    unpriced_requests: int

    @property
    def saving_usd(self) -> Decimal:
        return self.direct_usd - self.priced_actual_usd

    @property
    def saving_pct(self) -> Decimal | None:
        if not self.direct_usd:
            return None
        return (self.saving_usd / self.direct_usd * 100).quantize(Decimal("0.01"))

    @property
    def meets_target(self) -> bool | None:
        pct = self.saving_pct
        return None if pct is None else pct >= TARGET_SAVING_PCT

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "requests": self.requests,
            "actual_usd": f"{self.actual_usd:f}",
            "direct_usd": f"{self.direct_usd:f}",
            "saving_usd": f"{self.saving_usd:f}",
            "saving_pct": None if self.saving_pct is None else f"{self.saving_pct:f}",
            "meets_target": self.meets_target,
            "unpriced_requests": self.unpriced_requests,
        }


def answered(
    start: datetime | None = None, end: datetime | None = None, client_key_id: int | None = None
) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(status__in=["ok", "partial"])
    if client_key_id is not None:
        records = records.filter(client_key_id=client_key_id)
    if start is not None:
        records = records.filter(created__gte=start)
    if end is not None:
        records = records.filter(created__lt=end)
    return records


def savings(
    group_by: str,
    start: datetime | None = None,
    end: datetime | None = None,
    client_key_id: int | None = None,
) -> tuple[list[SavingsRow], SavingsRow]:
    """Rows per bucket (newest or largest first) and the total over the period."""
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}")
    priced = Q(direct_cost_usd__isnull=False)
    sums: dict[str, Any] = {
        "requests": Count("id"),
        "actual": Sum("cost_usd"),
        "priced_actual": Sum("cost_usd", filter=priced),
        "direct": Sum("direct_cost_usd", filter=priced),
        "unpriced": Count("id", filter=~priced),
    }
    records = answered(start, end, client_key_id)
    grouped = records.annotate(bucket=GROUPINGS[group_by]).values("bucket").annotate(**sums)
    order = "-bucket" if group_by in ("day", "week", "month") else "-actual"
    rows = [_row(item["bucket"], item, group_by) for item in grouped.order_by(order)]
    total = _row("total", records.aggregate(**sums), group_by)
    return rows, total


def _row(bucket: Any, sums: Mapping[str, Any], group_by: str) -> SavingsRow:
    if isinstance(bucket, datetime):
        label = bucket.strftime("%Y-%m" if group_by == "month" else "%Y-%m-%d")
    else:
        label = str(bucket or "(none)")
    return SavingsRow(
        bucket=label,
        requests=sums["requests"] or 0,
        actual_usd=sums["actual"] or Decimal(0),
        priced_actual_usd=sums["priced_actual"] or Decimal(0),
        direct_usd=sums["direct"] or Decimal(0),
        unpriced_requests=sums["unpriced"] or 0,
    )
