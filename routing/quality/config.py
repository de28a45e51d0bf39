"""What the request path needs of quality, carried in the routing table: the enabled
rules' weights (no database on the hot path). Each route's latency target is in its
`RoutePolicy` (routing.table), beside its strategy and quality floor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from routing.quality.scoring import DEFAULT_WEIGHTS


@dataclass(frozen=True)
class QualityConfig:
    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))


def load() -> QualityConfig:
    """The rules' weights (defaults where no row says otherwise)."""
    from routing.quality.models import QualityRule

    weights = dict(DEFAULT_WEIGHTS)
    for rule in QualityRule.objects.all():
        if rule.key not in weights:
            continue
        if rule.enabled:
            weights[rule.key] = rule.weight
        else:
            del weights[rule.key]
    return QualityConfig(weights)
