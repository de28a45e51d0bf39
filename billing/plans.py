"""Subscription plans: a monthly fee with included tokens, then overage by volume tier.

The customer's AIMLAPI enterprise plan is $200 a month for 400M tokens. A call
inside the allowance costs the plan's amortised rate (fee / included tokens),
so the month's fee is spread over the tokens it buys; tokens past the
allowance cost the overage price, lowered by volume tiers as the month's
usage grows. The month's token count lives in Redis (one INCRBY per call), so
every gateway process prices against the same running total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.money import PER_MTOK, quantize

KEY = "sb:plan:{provider}:{month}"


@dataclass(frozen=True)
class Tier:
    from_tokens: int  # this price applies to the month's tokens past this count
    usd_per_mtok: Decimal


@dataclass(frozen=True)
class PlanInfo:
    provider: str
    monthly_fee_usd: Decimal
    included_tokens: int
    overage_usd_per_mtok: Decimal
    tiers: tuple[Tier, ...] = ()  # ascending by from_tokens

    @property
    def included_rate_per_mtok(self) -> Decimal:
        if not self.included_tokens:
            return Decimal(0)
        return self.monthly_fee_usd / self.included_tokens * PER_MTOK

    def key(self, now: datetime) -> str:
        return KEY.format(provider=self.provider, month=now.strftime("%Y-%m"))

    def highest_rate_per_mtok(self) -> Decimal:
        return max([self.included_rate_per_mtok, self.overage_usd_per_mtok])

    def cost(self, used_before: int, tokens: int) -> Decimal:
        """What ``tokens`` cost when the month had already used ``used_before``."""
        total = Decimal(0)
        start, end = used_before, used_before + tokens
        for low, high, rate in self._segments():
            overlap = min(end, high) - max(start, low)
            if overlap > 0:
                total += overlap * rate
        return quantize(total / PER_MTOK)

    def _segments(self) -> list[tuple[int, int, Decimal]]:
        """Token ranges of the month and their price per million."""
        segments = [(0, self.included_tokens, self.included_rate_per_mtok)]
        boundaries = [(self.included_tokens, self.overage_usd_per_mtok)]
        boundaries += [
            (max(t.from_tokens, self.included_tokens), t.usd_per_mtok) for t in self.tiers
        ]
        boundaries.sort(key=lambda b: b[0])
        for index, (low, rate) in enumerate(boundaries):
            high = boundaries[index + 1][0] if index + 1 < len(boundaries) else 2**63
            segments.append((low, high, rate))
        return segments
