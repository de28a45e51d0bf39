"""What the provider status page shows, read from the health probes' history.

Uptime is the share of successful probes in a window (24 hours, 30 days): with one
probe per deployment every SWITCHBOARD_PROBE_SECONDS, a window without probes has no
uptime rather than 100%. A provider's figures pool its deployments' probes. Latency
is of successful probes only: a failure's time says how long it took to fail.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing.money import quantize
from project.redis import sync_client
from routing.breaker import KEY as BREAKER_KEY
from routing.models import (
    Deployment,
    DeploymentHealth,
    Environment,
    ProbeResult,
    Provider,
    ProviderCredential,
)

Health = DeploymentHealth.State
DAY = timedelta(hours=24)
MONTH = timedelta(days=30)
BUCKET = timedelta(minutes=15)  # the latency chart's resolution: 96 points a day


@dataclass
class Uptime:
    ok: int = 0
    total: int = 0

    @property
    def pct(self) -> Decimal | None:
        """Successful probes as a percentage, to two places; None without probes."""
        if not self.total:
            return None
        return (Decimal(self.ok) * 100 / self.total).quantize(Decimal("0.01"))

    def __add__(self, other: Uptime) -> Uptime:
        return Uptime(self.ok + other.ok, self.total + other.total)


@dataclass
class DeploymentStatus:
    deployment: Deployment
    state: str
    since: datetime | None
    reason: str
    breaker: str
    probed: bool  # has a production key, so the probes reach it
    last: ProbeResult | None
    latencies: list[int]  # successful probes of the last 24 hours, oldest first
    day: Uptime
    month: Uptime
    cost_month: Decimal

    @property
    def p50_ms(self) -> int | None:
        return percentile(sorted(self.latencies), 50)

    @property
    def p95_ms(self) -> int | None:
        return percentile(sorted(self.latencies), 95)


@dataclass
class ProviderStatus:
    provider: Provider
    deployments: list[DeploymentStatus] = field(default_factory=list)

    @property
    def state(self) -> str:
        return provider_state([d.state for d in self.deployments])

    @property
    def day(self) -> Uptime:
        return sum((d.day for d in self.deployments), Uptime())

    @property
    def month(self) -> Uptime:
        return sum((d.month for d in self.deployments), Uptime())

    @property
    def p50_ms(self) -> int | None:
        return percentile(sorted(ms for d in self.deployments for ms in d.latencies), 50)

    @property
    def p95_ms(self) -> int | None:
        return percentile(sorted(ms for d in self.deployments for ms in d.latencies), 95)


def provider_state(states: Sequence[str]) -> str:
    """Up when every probed deployment is up, down when every one is down, else degraded."""
    known = [state for state in states if state != Health.UNKNOWN]
    if not known:
        return Health.UNKNOWN
    if all(state == Health.DOWN for state in known):
        return Health.DOWN
    if all(state == Health.UP for state in known):
        return Health.UP
    return Health.DEGRADED


def percentile(ordered: Sequence[int], pct: int) -> int | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def status(now: datetime | None = None) -> dict[str, Any]:
    """Every enabled provider with its deployments' state, latency and uptime, and the
    latency chart's data (per provider: one line per deployment, 15-minute medians)."""
    now = now or timezone.now()
    day_start, month_start = now - DAY, now - MONTH
    deployments = list(
        Deployment.objects.enabled()
        .select_related("provider", "health")
        .order_by("provider__priority", "provider__name", "name")
    )
    ids = [d.id for d in deployments]
    month = _uptimes(ids, month_start, now)
    day = _uptimes(ids, day_start, now)
    latencies: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for deployment_id, created, latency_ms in (
        ProbeResult.objects.filter(
            deployment_id__in=ids, created__gte=day_start, created__lte=now, ok=True
        )
        .order_by("created")
        .values_list("deployment_id", "created", "latency_ms")
    ):
        latencies[deployment_id].append((created, latency_ms))
    with_prod_key = set(
        ProviderCredential.objects.enabled()
        .filter(environment=Environment.PROD)
        .values_list("provider_id", flat=True)
    )
    breakers = _breaker_states(ids)

    providers: dict[int, ProviderStatus] = {}
    for deployment in deployments:
        health = getattr(deployment, "health", None)  # the reverse one-to-one raises when absent
        uptime_month, cost = month.get(deployment.id, (Uptime(), Decimal(0)))
        row = DeploymentStatus(
            deployment=deployment,
            state=health.state if health else Health.UNKNOWN,
            since=health.since if health else None,
            reason=health.reason if health else "not probed yet",
            breaker=breakers.get(deployment.id, "closed"),
            probed=deployment.provider_id in with_prod_key,
            last=deployment.probe_results.order_by("-created", "-id").first(),
            latencies=[ms for _, ms in latencies[deployment.id]],
            day=day.get(deployment.id, (Uptime(), Decimal(0)))[0],
            month=uptime_month,
            cost_month=cost,
        )
        provider = providers.setdefault(deployment.provider_id, ProviderStatus(deployment.provider))
        provider.deployments.append(row)
    rows = list(providers.values())
    return {
        "providers": rows,
        "now": now,
        "chart": latency_chart(rows, latencies, now),
    }


def latency_chart(
    providers: Sequence[ProviderStatus],
    latencies: dict[int, list[tuple[datetime, int]]],
    now: datetime,
) -> dict[str, Any]:
    """Labels (the starts of the last 24 hours' 15-minute buckets, UTC) and, per provider,
    one line per deployment: the median latency of its successful probes in each bucket,
    or null where it had none."""
    buckets = int(DAY / BUCKET)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    end = epoch + BUCKET * math.ceil((now - epoch) / BUCKET)  # the next quarter hour
    start = end - DAY
    labels = [(start + BUCKET * i).astimezone(UTC).strftime("%H:%M") for i in range(buckets)]
    charts = []
    for provider in providers:
        lines = []
        for row in provider.deployments:
            grouped: list[list[int]] = [[] for _ in range(buckets)]
            for created, latency_ms in latencies[row.deployment.id]:
                index = int((created - start) / BUCKET)
                if 0 <= index < buckets:
                    grouped[index].append(latency_ms)
            lines.append(
                {
                    "label": row.deployment.name,
                    "data": [round(statistics.median(g)) if g else None for g in grouped],
                }
            )
        charts.append({"provider": provider.provider.name, "lines": lines})
    return {"labels": labels, "providers": charts}


def _uptimes(ids: list[int], start: datetime, end: datetime) -> dict[int, tuple[Uptime, Decimal]]:
    """Per deployment: its probes in the window, how many succeeded, and what they cost."""
    rows = (
        ProbeResult.objects.filter(deployment_id__in=ids, created__gte=start, created__lte=end)
        .values("deployment_id")
        .annotate(total=Count("id"), good=Count("id", filter=Q(ok=True)), cost=Sum("cost_usd"))
        .order_by()
    )
    return {
        # SQLite sums decimals as floats: back to the ledger's precision.
        row["deployment_id"]: (
            Uptime(row["good"], row["total"]),
            quantize(row["cost"] or Decimal(0)),
        )
        for row in rows
    }


def _breaker_states(ids: list[int]) -> dict[int, str]:
    # The live state is in Redis, shared by every gateway process.
    pipe = sync_client().pipeline(transaction=False)
    for deployment_id in ids:
        pipe.hget(BREAKER_KEY.format(deployment_id), "state")
    return {
        deployment_id: state.decode()
        for deployment_id, state in zip(ids, pipe.execute(), strict=True)
        if isinstance(state, bytes)
    }
