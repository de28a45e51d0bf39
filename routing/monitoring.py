"""The monitoring dashboard, the performance report and latency/error anomaly alerts,
computed from the usage ledger (never on the request path).

Definitions, the same on the dashboard, the report, the CSV and the anomaly job:

- latency: a request's `latency_ms` in the ledger (the whole answer; for a stream, its
  first token), of requests a provider answered (not cache hits or deduplicated ones);
  percentiles are nearest-rank, computed in Python, so SQLite and PostgreSQL agree;
- a provider's error rate: its failed calls over its calls (`attempts` of every record;
  a candidate passed over for a rate limit or budget is no call);
- the error rate of requests: records with status `error` over all requests;
- fallback rate: requests that tried more than one deployment over requests that tried one;
- cache hit ratio: cache hits over requests that were not refused (429 before any work).

A period with more than SWITCHBOARD_MONITORING["MAX_ROWS"] records is read as an even
sample (every n-th row by id) for the percentiles and rates; counts, tokens and cost
are always summed over every row, in the database.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Mod, TruncDate
from django.utils import timezone

from billing.models import UsageRecord
from billing.money import quantize
from project.alerts import raise_alert
from routing.status import percentile

# Period choice -> (length, chart bucket)
PERIODS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "6h": (timedelta(hours=6), timedelta(minutes=30)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
DEFAULT_PERIOD = "24h"
ROW_FIELDS = (
    "created",
    "provider",
    "status",
    "latency_ms",
    "cache_hit",
    "deduplicated",
    "attempts",
)
CALL_OUTCOMES_NOT_CALLS = {"rejected"}  # a candidate passed over (its limit, its budget)


def max_rows() -> int:
    return int(settings.SWITCHBOARD_MONITORING["MAX_ROWS"])


@dataclass
class Tally:
    """Counts and latencies of one slice (a provider, a time bucket, the whole period)."""

    requests: int = 0
    errors: int = 0
    refused: int = 0
    tried: int = 0  # requests with at least one call
    fell_back: int = 0
    cache_hits: int = 0
    calls: int = 0
    failed_calls: int = 0
    latencies: list[int] = field(default_factory=list)

    def percentiles(self) -> tuple[int | None, int | None, int | None]:
        ordered = sorted(self.latencies)
        return percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99)

    @property
    def error_rate(self) -> float | None:
        return rate(self.errors, self.requests)

    @property
    def call_error_rate(self) -> float | None:
        return rate(self.failed_calls, self.calls)

    @property
    def fallback_rate(self) -> float | None:
        return rate(self.fell_back, self.tried)

    @property
    def cache_hit_ratio(self) -> float | None:
        return rate(self.cache_hits, self.requests - self.refused)


def rate(part: int, whole: int) -> float | None:
    """A percentage to two places; None when there is nothing to divide by."""
    return round(100 * part / whole, 2) if whole else None


@dataclass
class ProviderRow:
    provider: str
    answered: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    tally: Tally

    @property
    def p50(self) -> int | None:
        return self.tally.percentiles()[0]

    @property
    def p95(self) -> int | None:
        return self.tally.percentiles()[1]

    @property
    def p99(self) -> int | None:
        return self.tally.percentiles()[2]


@dataclass
class Period:
    start: datetime
    end: datetime
    total: Tally
    providers: list[ProviderRow]
    sampled_every: int  # 1: every row read; n: one row in n
    records: int


def records_between(start: datetime, end: datetime) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(created__gte=start, created__lt=end)


def bounded_rows(records: QuerySet[UsageRecord], count: int) -> tuple[Iterable[tuple], int]:
    """The rows of `records` to tally: all of them, or every n-th by id past MAX_ROWS."""
    step = max(1, math.ceil(count / max_rows()))
    if step > 1:
        records = records.alias(sample=Mod("id", step)).filter(sample=0)
    return records.values_list(*ROW_FIELDS).iterator(chunk_size=2000), step


def tally_row(
    row: tuple, total: Tally, by_provider: dict[str, Tally], extra: Sequence[Tally] = ()
) -> None:
    """Add one ledger row to the period's tally, its providers' and any others (a bucket)."""
    _, provider, status, latency_ms, cache_hit, deduplicated, attempts = row
    for tally in (total, *extra):
        tally.requests += 1
        tally.errors += status == "error"
        tally.refused += status == "rejected"
        tally.cache_hits += bool(cache_hit)
    calls = [a for a in attempts or () if a.get("outcome") not in CALL_OUTCOMES_NOT_CALLS]
    if calls:
        # By id, provider and model: rows written by other tools may have no deployment id.
        fell_back = (
            len({(a.get("deployment_id"), a.get("provider"), a.get("model")) for a in calls}) > 1
        )
        for tally in (total, *extra):
            tally.tried += 1
            tally.fell_back += fell_back
    for call in calls:
        called = by_provider[call.get("provider", "")]
        called.calls += 1
        called.failed_calls += call.get("outcome") != "ok"
        total.calls += 1
        total.failed_calls += call.get("outcome") != "ok"
    if provider and status in ("ok", "partial") and not cache_hit and not deduplicated:
        by_provider[provider].latencies.append(latency_ms)
        by_provider[provider].requests += 1
        total.latencies.append(latency_ms)


def period_report(start: datetime, end: datetime) -> Period:
    """Every provider's numbers between start and end."""
    records = records_between(start, end)
    count = records.count()
    rows, step = bounded_rows(records, count)
    total = Tally()
    by_provider: dict[str, Tally] = defaultdict(Tally)
    for row in rows:
        tally_row(row, total, by_provider)
    return Period(start, end, total, provider_rows(records, by_provider), step, count)


def provider_rows(records: QuerySet[UsageRecord], tallies: dict[str, Tally]) -> list[ProviderRow]:
    sums: dict[str, dict[str, Any]] = {
        row["provider"]: dict(row)
        for row in records.exclude(provider="")
        .values("provider")
        .annotate(
            answered=Count("id", filter=Q(status__in=("ok", "partial"))),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost_usd"),
        )
    }
    rows = []
    for name in sorted(set(sums) | {name for name in tallies if name}):
        found = sums.get(name, {})
        rows.append(
            ProviderRow(
                name,
                found.get("answered") or 0,
                found.get("prompt") or 0,
                found.get("completion") or 0,
                # SQLite sums decimals in floating point: back to the money quantum.
                quantize(found.get("cost") or Decimal(0)),
                tallies.get(name) or Tally(),
            )
        )
    return rows


def cost_per_day(start: datetime, end: datetime) -> list[tuple[str, Decimal]]:
    rows = (
        records_between(start, end)
        .annotate(day=TruncDate("created"))
        .values("day")
        .annotate(cost=Sum("cost_usd"))
        .order_by("day")
    )
    return [(row["day"].isoformat(), row["cost"] or Decimal(0)) for row in rows]


def dashboard(period: str = DEFAULT_PERIOD, now: datetime | None = None) -> dict[str, Any]:
    """The dashboard's context: the period's figures, charts over time, live breakers."""
    length, bucket = PERIODS.get(period, PERIODS[DEFAULT_PERIOD])
    end = now or timezone.now()
    start = end - length
    records = records_between(start, end)
    count = records.count()
    rows, step = bounded_rows(records, count)
    buckets = math.ceil(length / bucket)
    total = Tally()
    by_provider: dict[str, Tally] = defaultdict(Tally)
    over_time = [Tally() for _ in range(buckets)]
    provider_over_time: dict[str, list[list[int]]] = defaultdict(
        lambda: [[] for _ in range(buckets)]
    )
    for row in rows:
        index = min(buckets - 1, int((row[0] - start) / bucket))
        tally_row(row, total, by_provider, (over_time[index],))
        provider, status, latency_ms, cache_hit, deduplicated = row[1:6]
        if provider and status in ("ok", "partial") and not cache_hit and not deduplicated:
            provider_over_time[provider][index].append(latency_ms)
    labels = [(start + bucket * i).strftime(label_format(bucket)) for i in range(buckets)]
    providers = provider_rows(records, by_provider)
    chart = {
        "labels": labels,
        "latency": [
            {
                "provider": name,
                "p50": [percentile(sorted(b), 50) for b in provider_over_time[name]],
                "p95": [percentile(sorted(b), 95) for b in provider_over_time[name]],
                "p99": [percentile(sorted(b), 99) for b in provider_over_time[name]],
            }
            for name in sorted(provider_over_time)
        ],
        "error_rate": [t.error_rate for t in over_time],
        "fallback_rate": [t.fallback_rate for t in over_time],
        "cache_hit_ratio": [t.cache_hit_ratio for t in over_time],
        "cost_per_day": [
            {"day": day, "cost": str(cost.quantize(Decimal("0.000001")))}
            for day, cost in cost_per_day(start, end)
        ],
    }
    return {
        "period": period if period in PERIODS else DEFAULT_PERIOD,
        "periods": list(PERIODS),
        "report": Period(start, end, total, providers, step, count),
        "breakers": breaker_states(),
        "chart": chart,
    }


def label_format(bucket: timedelta) -> str:
    return "%Y-%m-%d" if bucket >= timedelta(days=1) else "%m-%d %H:%M"


def breaker_states() -> list[dict[str, Any]]:
    """Every enabled deployment's breaker, live from Redis."""
    from project.redis import sync_client
    from routing.breaker import KEY
    from routing.models import Deployment

    deployments = list(
        Deployment.objects.enabled().select_related("provider").order_by("provider__name", "name")
    )
    pipe = sync_client().pipeline(transaction=False)
    for deployment in deployments:
        pipe.hmget(KEY.format(deployment.id), "state", "opened_at")
    states = []
    for deployment, (state, opened_at) in zip(deployments, pipe.execute(), strict=True):
        opened = (
            datetime.fromtimestamp(float(opened_at), tz=UTC)
            if state and state != b"closed" and opened_at
            else None
        )
        states.append(
            {
                "provider": deployment.provider.name,
                "model": deployment.name,
                "state": state.decode() if state else "closed",
                "opened_at": opened,
            }
        )
    return states


CSV_HEADER = [
    "provider",
    "answered",
    "calls",
    "failed calls",
    "error rate %",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "prompt tokens",
    "completion tokens",
    "cost usd",
]


def report_csv(report: Period) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["from", report.start.isoformat(), "to", report.end.isoformat()])
    writer.writerow(CSV_HEADER)
    for row in report.providers:
        writer.writerow(
            [
                row.provider,
                row.answered,
                row.tally.calls,
                row.tally.failed_calls,
                _blank(row.tally.call_error_rate),
                _blank(row.p50),
                _blank(row.p95),
                _blank(row.p99),
                row.prompt_tokens,
                row.completion_tokens,
                f"{row.cost_usd:f}",
            ]
        )
    total = report.total
    p50, p95, p99 = total.percentiles()
    writer.writerow(
        [
            "all",
            sum(r.answered for r in report.providers),
            total.calls,
            total.failed_calls,
            _blank(total.call_error_rate),
            _blank(p50),
            _blank(p95),
            _blank(p99),
            sum(r.prompt_tokens for r in report.providers),
            sum(r.completion_tokens for r in report.providers),
            f"{sum((r.cost_usd for r in report.providers), Decimal(0)):f}",
        ]
    )
    writer.writerow([])
    writer.writerow(["requests", total.requests, "errors", total.errors, "refused", total.refused])
    writer.writerow(
        [
            "request error rate %",
            _blank(total.error_rate),
            "fallback rate %",
            _blank(total.fallback_rate),
            "cache hit ratio %",
            _blank(total.cache_hit_ratio),
        ]
    )
    if report.sampled_every > 1:
        writer.writerow([f"percentiles and rates from one record in {report.sampled_every}"])
    return out.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


# -- anomalies ---------------------------------------------------------------------------

ANOMALY_KEY = "sb:anomaly:{kind}:{provider}"
ANOMALY_KEY_TTL = 7 * 86400


@dataclass(frozen=True)
class Anomaly:
    kind: str  # latency_anomaly | error_rate_anomaly
    provider: str
    value: float
    baseline: float | None
    threshold: float
    calls: int


def find_anomalies(now: datetime | None = None) -> list[Anomaly]:
    """Providers whose last window is far above their baseline (settings.SWITCHBOARD_MONITORING)."""
    conf = settings.SWITCHBOARD_MONITORING
    now = now or timezone.now()
    window_start = now - timedelta(minutes=conf["ANOMALY_WINDOW_MINUTES"])
    baseline_start = window_start - timedelta(hours=conf["ANOMALY_BASELINE_HOURS"])
    window = period_report(window_start, now)
    baseline = {
        row.provider: row.tally for row in period_report(baseline_start, window_start).providers
    }
    found = []
    for row in window.providers:
        tally, before = row.tally, baseline.get(row.provider, Tally())
        if len(tally.latencies) >= conf["ANOMALY_MIN_REQUESTS"]:
            p95 = tally.percentiles()[1]
            base_p95 = (
                before.percentiles()[1]
                if len(before.latencies) >= conf["ANOMALY_MIN_REQUESTS"]
                else None
            )
            threshold = max(
                conf["ANOMALY_MIN_P95_MS"],
                conf["ANOMALY_LATENCY_FACTOR"] * base_p95 if base_p95 is not None else 0,
            )
            if base_p95 is not None and p95 is not None and p95 >= threshold:
                found.append(
                    Anomaly(
                        "latency_anomaly",
                        row.provider,
                        p95,
                        base_p95,
                        threshold,
                        len(tally.latencies),
                    )
                )
        if tally.calls >= conf["ANOMALY_MIN_REQUESTS"]:
            error_rate = tally.call_error_rate or 0.0
            base_rate = before.call_error_rate or 0.0
            threshold = max(
                conf["ANOMALY_ERROR_RATE_MIN_PCT"], base_rate + conf["ANOMALY_ERROR_RATE_POINTS"]
            )
            if error_rate >= threshold:
                found.append(
                    Anomaly(
                        "error_rate_anomaly",
                        row.provider,
                        error_rate,
                        base_rate,
                        threshold,
                        tally.calls,
                    )
                )
    return found


def check_anomalies(redis: Any, now: datetime | None = None) -> list[Anomaly]:
    """Alert each anomaly once: when a provider becomes anomalous, not while it stays so.

    An episode is a Redis key set (NX) when it starts and deleted when the provider is
    back to normal; the alert is unique on (kind, provider, episode start), so two
    workers checking at once raise one row.
    """
    now = now or timezone.now()
    anomalies = find_anomalies(now)
    current = {(a.kind, a.provider) for a in anomalies}
    raised = []
    for anomaly in anomalies:
        key = ANOMALY_KEY.format(kind=anomaly.kind, provider=anomaly.provider)
        redis.set(key, now.isoformat(timespec="seconds"), nx=True, ex=ANOMALY_KEY_TTL)
        episode = redis.get(key)
        episode = episode.decode() if isinstance(episode, bytes) else str(episode)
        _, created = raise_alert(
            anomaly.kind,
            f"provider:{anomaly.provider}",
            anomaly_title(anomaly),
            severity="warning",
            period=episode,
            body=anomaly_body(anomaly),
            data={
                "provider": anomaly.provider,
                "value": anomaly.value,
                "baseline": anomaly.baseline,
                "threshold": anomaly.threshold,
                "calls": anomaly.calls,
            },
        )
        if created:
            raised.append(anomaly)
    for kind in ("latency_anomaly", "error_rate_anomaly"):
        for key in redis.scan_iter(match=ANOMALY_KEY.format(kind=kind, provider="*")):
            name = (key.decode() if isinstance(key, bytes) else key).rsplit(":", 1)[-1]
            if (kind, name) not in current:
                redis.delete(key)  # back to normal: the next anomaly is a new episode
    return raised


def anomaly_title(anomaly: Anomaly) -> str:
    if anomaly.kind == "latency_anomaly":
        return (
            f"{anomaly.provider}: p95 latency {anomaly.value:.0f} ms, "
            f"{anomaly.value / max(anomaly.baseline or 1, 1):.1f}x its baseline "
            f"({anomaly.baseline:.0f} ms)"
        )
    return (
        f"{anomaly.provider}: {anomaly.value:.1f}% of calls failing "
        f"(baseline {anomaly.baseline or 0:.1f}%)"
    )


def anomaly_body(anomaly: Anomaly) -> str:
    conf = settings.SWITCHBOARD_MONITORING
    what = "p95 latency (ms)" if anomaly.kind == "latency_anomaly" else "error rate (%)"
    return (
        f"Over the last {conf['ANOMALY_WINDOW_MINUTES']} minutes ({anomaly.calls} requests), "
        f"{anomaly.provider}'s {what} was {anomaly.value:.1f}, against {anomaly.baseline or 0:.1f} "
        f"over the {conf['ANOMALY_BASELINE_HOURS']} hours before (alert threshold "
        f"{anomaly.threshold:.1f}). It alerts again only after it has been back to normal."
    )
