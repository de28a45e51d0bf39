"""Prometheus metrics: observed once per request, from its usage entry, and scraped at /metrics.

Every request leaves exactly one usage entry, and the engine observes it here right
after the entry is written (`Engine._commit`), from the entry's own fields. So the
counters equal the ledger: a request is counted once, with the status, route,
provider, model, tokens and cost its ledger row has.

The hot path pays a few microseconds (`observe`): the label children of one
(route, provider, model, status, code) are bound once and kept in a dict, so a
request does one dict lookup and a handful of increments.

Several gateway processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (to an empty
directory, before the process starts), every process writes its values to files
there and a scrape of any one of them adds up all (prometheus_client's
multiprocess mode). Unset, each process has its own registry and /metrics shows
that process's counts alone.

Gauges that describe shared state (breakers, budgets, queues, the ledger's backlog)
are read from Redis and the database when /metrics is scraped (`SharedStateCollector`),
never kept in process memory.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from billing.ledger import UsageEntry

log = logging.getLogger(__name__)
# One line per request (no content: route, provider, model, outcome, tokens, cost, timing).
# Off unless SWITCHBOARD_REQUEST_LOG=true: the ledger has every request, and a log line
# costs more than all the metrics together (bench/metrics_observe.py).
request_log = logging.getLogger("routing.requests")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter(
    "switchboard_requests",
    "Client requests, one per usage record: the ledger's status and error code.",
    ["route", "provider", "model", "status", "code"],
)
TOKENS = Counter(
    "switchboard_tokens",
    "Tokens of answered requests, as the ledger counts them (kind: prompt or completion).",
    ["route", "provider", "model", "kind"],
)
COST = Counter(
    "switchboard_cost_usd",
    "What requests cost, in USD (the ledger keeps the exact Decimal; this is a float).",
    ["route", "provider", "model"],
)
DURATION = Histogram(
    "switchboard_request_duration_seconds",
    "From the engine taking the request to its usage record: the whole answer, or the "
    "whole stream.",
    ["route", "provider"],
    buckets=LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "switchboard_gateway_overhead_seconds",
    "A request's time not spent waiting on a provider (to the first token for streams); "
    "requests that waited out a retry backoff are left out.",
    ["route"],
    buckets=OVERHEAD_BUCKETS,
)
TTFT = Histogram(
    "switchboard_time_to_first_token_seconds",
    "Streams answered by a provider: from the engine taking the request to its first token.",
    ["route", "provider"],
    buckets=LATENCY_BUCKETS,
)
ATTEMPTS = Counter(
    "switchboard_provider_attempts",
    "Calls to providers (and candidates passed over), by outcome: ok, transient, "
    "permanent, rejected.",
    ["provider", "model", "outcome"],
)
RETRIES = Counter(
    "switchboard_retries", "Calls repeated on the same deployment.", ["route", "provider"]
)
FALLBACKS = Counter(
    "switchboard_fallbacks",
    "Moves from a failed candidate to the route's next one (provider: the one left).",
    ["route", "provider"],
)
CACHE_HITS = Counter("switchboard_cache_hits", "Requests answered from the cache.", ["route"])
DEDUPLICATED = Counter(
    "switchboard_deduplicated",
    "Requests answered by an identical request's call in flight (single-flight).",
    ["route"],
)
ALLOWANCE_ADMISSIONS = Counter(
    "switchboard_allowance_admissions",
    "Requests admitted from a gateway process's allowances (routing.allowances), with no "
    "Redis round trip before the provider call.",
    ["route"],
)
REFUSED = Counter(
    "switchboard_refused",
    "Requests refused with 429 (reason: rate_limit or budget).",
    ["route", "reason"],
)

REFUSAL_REASONS = {
    "rate_limit_exceeded": "rate_limit",
    "concurrency_limit_exceeded": "rate_limit",
    "budget_exceeded": "budget",
}
ANSWERED = ("ok", "partial")


class _Bound:
    """The label children one kind of request touches, bound once."""

    __slots__ = (
        "cache_hits",
        "completion",
        "cost",
        "deduplicated",
        "duration",
        "overhead",
        "prompt",
        "refused",
        "requests",
        "ttft",
    )

    def __init__(self, route: str, provider: str, model: str, status: str, code: str) -> None:
        self.requests = REQUESTS.labels(route, provider, model, status, code)
        self.prompt = TOKENS.labels(route, provider, model, "prompt")
        self.completion = TOKENS.labels(route, provider, model, "completion")
        self.cost = COST.labels(route, provider, model)
        self.duration = DURATION.labels(route, provider)
        self.overhead = OVERHEAD.labels(route)
        self.ttft = TTFT.labels(route, provider)
        self.cache_hits = CACHE_HITS.labels(route)
        self.deduplicated = DEDUPLICATED.labels(route)
        reason = REFUSAL_REASONS.get(code)
        self.refused = REFUSED.labels(route, reason) if reason else None


_bound: dict[tuple[str, str, str, str, str], _Bound] = {}
_MAX_BOUND = 20_000  # routes x models x codes stays far below this; a bound, not a budget


_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, bound once (labels() takes a lock and builds a tuple)."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        if len(_children) >= _MAX_BOUND:
            _children.clear()
        child = _children[key] = metric.labels(*labels)
    return child


def observe(entry: UsageEntry, now: float | None = None) -> None:
    """Count one request from its usage entry (called once, after the entry is written);
    ``now``: when the request ended, if that was before this call."""
    try:
        _observe(entry, time.time() if now is None else now)
    except Exception:  # metrics are never worth failing a request over
        log.exception("metrics of %s not recorded", entry.request_id)


def _observe(entry: UsageEntry, now: float) -> None:
    key = (entry.route, entry.provider, entry.model, entry.status, entry.error_code)
    bound = _bound.get(key)
    if bound is None:
        if len(_bound) >= _MAX_BOUND:
            _bound.clear()
        bound = _bound[key] = _Bound(*key)
    bound.requests.inc()
    if entry.prompt_tokens:
        bound.prompt.inc(entry.prompt_tokens)
    if entry.completion_tokens:
        bound.completion.inc(entry.completion_tokens)
    if entry.cost_usd:
        bound.cost.inc(float(entry.cost_usd))
    total = now - entry.created.timestamp()
    bound.duration.observe(total)
    if entry.cache_hit:
        bound.cache_hits.inc()
    elif entry.deduplicated:
        bound.deduplicated.inc()
    if bound.refused is not None:
        bound.refused.inc()
    if entry.decision.get("admitted") == "allowance":
        _child(ALLOWANCE_ADMISSIONS, entry.route).inc()

    provider_ms = 0.0
    retried = False
    previous: dict[str, Any] | None = None
    for attempt in entry.attempts:
        provider_ms += attempt["latency_ms"]
        _child(ATTEMPTS, attempt["provider"], attempt["model"], attempt["outcome"]).inc()
        if previous is not None:
            if previous["deployment_id"] == attempt["deployment_id"]:
                retried = True
                _child(RETRIES, entry.route, attempt["provider"]).inc()
            else:
                _child(FALLBACKS, entry.route, previous["provider"]).inc()
        previous = attempt
    if entry.streamed:
        # The entry's latency of a stream is to its first payload (engine.open_stream).
        first = entry.latency_ms / 1000
        if entry.status in ANSWERED and entry.attempts:
            bound.ttft.observe(first)
        elapsed = first
    else:
        elapsed = total
    if not retried:
        bound.overhead.observe(max(0.0, elapsed - provider_ms / 1000))

    if request_log.isEnabledFor(logging.INFO):
        request_log.info(
            "%s %s %s/%s %s",
            entry.status,
            entry.route,
            entry.provider or "-",
            entry.model or "-",
            entry.error_code or entry.http_status,
            extra={
                "request_id": entry.request_id,
                "route": entry.route,
                "provider": entry.provider,
                "model": entry.model,
                "status": entry.status,
                "http_status": entry.http_status,
                "error_code": entry.error_code,
                "attempts": len(entry.attempts),
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": entry.completion_tokens,
                "cost_usd": str(entry.cost_usd),
                "latency_ms": entry.latency_ms,
                "streamed": entry.streamed,
                "cache_hit": entry.cache_hit,
                "deduplicated": entry.deduplicated,
                "client_key": entry.client_key_name,
            },
        )


# -- scraping ------------------------------------------------------------------------------

BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class SharedStateCollector:
    """Gauges read at scrape time from Redis and the database, the same for every process."""

    def collect(self) -> Iterator[Metric]:
        for part in (self._breakers, self._budgets, self._queues, self._ledger):
            try:
                yield from part()
            except Exception:  # one unreachable source must not hide the others
                log.exception("metrics: %s could not be read", part.__name__)

    def _breakers(self) -> Iterator[Metric]:
        from project.redis import sync_client
        from routing.breaker import KEY
        from routing.models import Deployment

        gauge = GaugeMetricFamily(
            "switchboard_breaker_state",
            "Each enabled deployment's circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["deployment_id", "provider", "model"],
        )
        deployments = list(
            Deployment.objects.enabled()
            .select_related("provider")
            .order_by("provider__name", "name")
        )
        pipe = sync_client().pipeline(transaction=False)
        for deployment in deployments:
            pipe.hget(KEY.format(deployment.id), "state")
        for deployment, state in zip(deployments, pipe.execute(), strict=True):
            value = BREAKER_VALUES.get(state.decode() if state else "closed", 0.0)
            gauge.add_metric([str(deployment.id), deployment.provider.name, deployment.name], value)
        yield gauge

    def _budgets(self) -> Iterator[Metric]:
        from django.utils import timezone

        from billing.budgets import current_spend
        from billing.models import Budget
        from project.redis import sync_client

        labels = ["budget", "scope", "scope_ref", "period", "hard"]
        utilisation = GaugeMetricFamily(
            "switchboard_budget_utilisation_ratio",
            "Each budget's spend this period over its amount (1 = all spent), live from Redis.",
            labels=labels,
        )
        spent_usd = GaugeMetricFamily(
            "switchboard_budget_spent_usd",
            "Each budget's spend this period, in USD.",
            labels=labels,
        )
        now = timezone.now()
        redis = sync_client()
        for budget in Budget.objects.all():
            info = budget.info()
            spent, _ = current_spend(redis, info, now)
            values = [info.label, info.scope, info.scope_ref, info.period, str(info.hard).lower()]
            spent_usd.add_metric(values, float(spent))
            if budget.amount_usd:
                utilisation.add_metric(values, float(spent / budget.amount_usd))
        yield utilisation
        yield spent_usd

    def _queues(self) -> Iterator[Metric]:
        import django_rq
        from django.conf import settings

        depth = GaugeMetricFamily(
            "switchboard_rq_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"]
        )
        failed = GaugeMetricFamily(
            "switchboard_rq_failed_jobs",
            "Jobs in each RQ queue's failed registry.",
            labels=["queue"],
        )
        for name in settings.RQ_QUEUES:
            queue = django_rq.get_queue(name)
            depth.add_metric([name], queue.count)
            failed.add_metric([name], queue.failed_job_registry.count)
        yield depth
        yield failed

    def _ledger(self) -> Iterator[Metric]:
        from billing.ledger import DEAD_LETTER_KEY, LEDGER_KEY
        from project.redis import sync_client

        redis = sync_client()
        yield GaugeMetricFamily(
            "switchboard_ledger_backlog",
            "Usage entries written by the gateway and not yet drained into the database.",
            value=int(redis.llen(LEDGER_KEY)),  # type: ignore[arg-type]
        )
        yield GaugeMetricFamily(
            "switchboard_ledger_dead_letters",
            "Usage entries the drain could not store, kept aside for an operator.",
            value=int(redis.llen(DEAD_LETTER_KEY)),  # type: ignore[arg-type]
        )


class _Registered:
    """This process's own metrics, for the single-process case."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition() -> bytes:
    """The text a scrape gets: every process's counters, and the shared state now."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Registered())  # type: ignore[arg-type]
    registry.register(SharedStateCollector())  # type: ignore[arg-type]
    return generate_latest(registry)


# -- who may scrape ------------------------------------------------------------------------


def scrape_refusal(authorization: str, address: str) -> tuple[int, str, str] | None:
    """None when the scrape is allowed; else (status, code, message).

    A bearer token, when SWITCHBOARD_METRICS_TOKEN is set, lets any address scrape;
    without one, only addresses in SWITCHBOARD_METRICS_ALLOW may.
    """
    from django.conf import settings

    token = settings.SWITCHBOARD_METRICS_TOKEN
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        if token and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return 401, "invalid_metrics_token", "The metrics token is not valid."
    if allowed_address(address, settings.SWITCHBOARD_METRICS_ALLOW):
        return None
    if token:
        return 401, "missing_metrics_token", "Send the metrics token as Authorization: Bearer."
    return (
        403,
        "metrics_not_allowed",
        f"{address or 'This address'} may not read the metrics: it is not in "
        "SWITCHBOARD_METRICS_ALLOW, and no SWITCHBOARD_METRICS_TOKEN is set.",
    )


def allowed_address(address: str, allowed: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            log.warning("SWITCHBOARD_METRICS_ALLOW entry %r is not an address or network", entry)
    return False


def metrics_view(request: Any) -> Any:
    """GET /metrics: the Prometheus text format, for an allowed address or the token."""
    from django.http import HttpResponse, JsonResponse

    from project.errors import ApiError

    refusal = scrape_refusal(
        request.headers.get("Authorization", ""), request.META.get("REMOTE_ADDR", "")
    )
    if refusal is not None:
        status, code, message = refusal
        response: Any = JsonResponse(ApiError(status, message, code).body(), status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
