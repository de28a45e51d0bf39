"""What the request path needs of quality, carried in the routing table: the
enabled rules' weights and each route's latency target (no database on the hot path)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from routing.quality.scoring import DEFAULT_WEIGHTS


@dataclass(frozen=True)
class QualityConfig:
    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    latency_targets: Mapping[str, int] = field(default_factory=dict)  # route name -> ms


def load(route_rows: Iterable[Any]) -> QualityConfig:
    """The rules' weights (defaults where no row says otherwise) and the routes' targets."""
    from routing.quality.models import QualityRule

    weights = dict(DEFAULT_WEIGHTS)
    for rule in QualityRule.objects.all():
        if rule.key not in weights:
            continue
        if rule.enabled:
            weights[rule.key] = rule.weight
        else:
            del weights[rule.key]
    targets = {r.name: r.latency_target_ms for r in route_rows if r.latency_target_ms}
    return QualityConfig(weights, targets)
