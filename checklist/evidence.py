"""Live evidence: small functions that measure whether the gateway meets a checklist line.

Each check reads real data (the ledger, budgets, alert channels, routes, breakers in
Redis, credentials, the last fallback drill) and returns a Measurement: pass, fail or
unknown, the measured value, the threshold, and when it was measured. A check whose
data does not exist yet returns unknown and says what is missing; none invents a value.

Items are bound to a check by `Item.evidence_key` (set in the admin, or on import
from BINDINGS below); `checklist.actions.evaluate_evidence()` runs the checks and keeps
every result as an EvidenceResult row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import QuerySet

if TYPE_CHECKING:
    from billing.models import UsageRecord
    from routing.models import Deployment, Route

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"

# The customer's plan (CHECKLIST.md, "Success Criteria Validation").
FALLBACK_CHAIN = ("aimlapi", "openai", "google", "anthropic")
BILLING_ALERT_THRESHOLDS = (70, 85, 95)
P95_TARGET_MS = 500
SAVING_TARGET_PCT = Decimal(70)
MONTHLY_SPEND_TARGET_USD = Decimal(5000)
UPTIME_TARGET_PCT = Decimal("99.99")
SATISFACTION_TARGET_PCT = Decimal(90)
SAVINGS_WINDOW_DAYS = 30
SATISFACTION_WINDOW_DAYS = 30
# Fewer ratings than this in the window measure nothing yet: unknown, not a verdict.
SATISFACTION_MIN_RATINGS = 10
# Requests a fallback drill sends carry this metadata key (checklist/drill.py); they
# are deliberately slow or failing, so the response-time check leaves them out.
DRILL_METADATA_KEY = "switchboard_drill"


@dataclass(frozen=True)
class Measurement:
    status: str  # pass | fail | unknown
    value: str  # what was measured, in words a stakeholder reads
    threshold: str
    measured_at: datetime
    detail: str = ""  # why it failed, or what is missing


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    threshold: str
    measure: Callable[[datetime], Measurement]

    def passed(self, now: datetime, value: str, detail: str = "") -> Measurement:
        return Measurement(PASS, value, self.threshold, now, detail)

    def failed(self, now: datetime, value: str, detail: str = "") -> Measurement:
        return Measurement(FAIL, value, self.threshold, now, detail)

    def unknown(self, now: datetime, detail: str) -> Measurement:
        return Measurement(UNKNOWN, "", self.threshold, now, detail)


REGISTRY: dict[str, Check] = {}


def check(key: str, title: str, threshold: str) -> Callable[[Callable[..., Measurement]], Check]:
    """Register ``measure(check, now)`` as the check ``key``."""

    def register(measure: Callable[[Check, datetime], Measurement]) -> Check:
        entry = Check(key, title, threshold, lambda now: measure(entry, now))
        REGISTRY[key] = entry
        return entry

    return register


def measure(key: str, now: datetime) -> Measurement:
    """Run one check; a check that raises is unknown, with the error, not a crash of the job."""
    entry = REGISTRY[key]
    try:
        return entry.measure(now)
    except Exception as exc:
        return entry.unknown(now, f"the check failed: {type(exc).__name__}: {exc}"[:500])


# -- money ----------------------------------------------------------------------------


@check("billing_alerts", "Billing alerts", "alerts at 70%, 85% and 95% through a working channel")
def billing_alerts(self: Check, now: datetime) -> Measurement:
    from billing.models import Budget
    from project.models import Channel

    budget = Budget.objects.filter(scope=Budget.Scope.GLOBAL, period=Budget.Period.MONTHLY).first()
    if budget is None:
        return self.failed(now, "no global monthly budget", "add one in the admin under Budgets")
    at = sorted(int(Decimal(str(x))) for x in budget.alert_at or [])
    missing = [t for t in BILLING_ALERT_THRESHOLDS if t not in at]
    shown = "/".join(str(t) for t in at) or "none"
    if missing:
        return self.failed(
            now,
            f"budget alerts at {shown}%",
            f"no alert at {', '.join(f'{t}%' for t in missing)} of the global budget",
        )
    channels = [c for c in Channel.objects.enabled() if c.receives("budget_threshold")]
    if not channels:
        return self.failed(
            now, f"alerts at {shown}%, no channel", "no enabled channel receives budget alerts"
        )
    delivered: list[str] = []
    untried: list[str] = []
    failing: list[str] = []
    for channel in channels:
        last = channel.deliveries.order_by("-created", "-id").first()
        (untried if last is None else delivered if last.ok else failing).append(channel.name)
    if not delivered and not untried:
        return self.failed(
            now,
            f"alerts at {shown}%, {len(channels)} channel(s) failing",
            f"the last delivery failed on every channel: {', '.join(failing)}",
        )
    state = (
        f"last delivery ok on {', '.join(delivered)}"
        if delivered
        else f"configured ({', '.join(untried)}), nothing delivered yet"
    )
    return self.passed(now, f"alerts at {shown}% of ${budget.amount_usd:,.0f}; {state}")


@check("cost_saving", "Cost saving", f"≥ {SAVING_TARGET_PCT}% vs direct providers")
def cost_saving(self: Check, now: datetime) -> Measurement:
    from billing.reports import savings

    _, total = savings("day", start=now - timedelta(days=SAVINGS_WINDOW_DAYS), end=now)
    pct = total.saving_pct
    if pct is None:
        return self.unknown(
            now, f"no answered request with a known direct price in {SAVINGS_WINDOW_DAYS} days"
        )
    value = (
        f"{pct}% over {SAVINGS_WINDOW_DAYS} days (${total.priced_actual_usd:,.2f} paid, "
        f"${total.direct_usd:,.2f} direct)"
    )
    return self.passed(now, value) if pct >= SAVING_TARGET_PCT else self.failed(now, value)


@check("monthly_spend", "Monthly spend", f"spend and forecast ≤ ${MONTHLY_SPEND_TARGET_USD:,}")
def monthly_spend(self: Check, now: datetime) -> Measurement:
    from billing.forecast import forecast_spend
    from billing.models import UsageRecord

    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if not UsageRecord.objects.filter(created__gte=month_start, created__lte=now).exists():
        return self.unknown(now, "no usage recorded this month")
    forecast = forecast_spend("global", budget_usd=MONTHLY_SPEND_TARGET_USD, now=now)
    value = (
        f"${forecast.spent_to_date:,.2f} spent this month, "
        f"${forecast.projected_total:,.2f} projected ({forecast.method})"
    )
    if forecast.spent_to_date > MONTHLY_SPEND_TARGET_USD:
        return self.failed(now, value, "this month's spend is over the target")
    if forecast.will_overrun:
        return self.failed(now, value, "the month is projected to end over the target")
    return self.passed(now, value)


# -- the request path -------------------------------------------------------------------


def plan_route() -> tuple[Route | None, list[Deployment]]:
    """The first enabled route whose chain holds the plan's four providers in order,
    and that chain's deployments; (None, []) if no route does."""
    from routing.models import Route

    for route in Route.objects.filter(enabled=True).prefetch_related("steps__deployment__provider"):
        chain = [
            step.deployment
            for step in route.steps.all()
            if step.deployment.enabled and step.deployment.provider.enabled
        ]
        names = [d.provider.name for d in chain]
        if _in_order(FALLBACK_CHAIN, names):
            return route, chain
    return None, []


def _in_order(wanted: tuple[str, ...], names: list[str]) -> bool:
    rest = iter(names)
    return all(name in rest for name in wanted)


@check("fallback_chain", "Four-provider fallback chain", " → ".join(FALLBACK_CHAIN))
def fallback_chain(self: Check, now: datetime) -> Measurement:
    from routing.models import ProviderCredential

    route, chain = plan_route()
    if route is None:
        return self.failed(
            now,
            "no such route",
            f"no enabled route falls back {' → '.join(FALLBACK_CHAIN)} (each provider enabled)",
        )
    with_key = set(
        ProviderCredential.objects.enabled()
        .filter(environment="prod")
        .values_list("provider__name", flat=True)
    )
    names = [d.provider.name for d in chain]
    value = f"route {route}: {' → '.join(names)}"
    keyless = [name for name in FALLBACK_CHAIN if name not in with_key]
    if keyless:
        return self.failed(now, value, f"no production API key for {', '.join(keyless)}")
    return self.passed(now, value)


@check("providers_healthy", "Providers healthy", "every breaker of the fallback chain closed")
def providers_healthy(self: Check, now: datetime) -> Measurement:
    from project.redis import sync_client
    from routing.breaker import KEY, State

    route, chain = plan_route()
    if route is None:
        return self.failed(now, "no four-provider route", "configure the fallback chain first")
    pipe = sync_client().pipeline(transaction=False)
    for deployment in chain:
        pipe.hget(KEY.format(deployment.pk), "state")
    states = [(raw or b"closed").decode() for raw in pipe.execute()]
    readings = [
        f"{d.provider.name} {s.replace('_', '-')}" for d, s in zip(chain, states, strict=True)
    ]
    value = ", ".join(readings)
    if any(state != State.CLOSED for state in states):
        return self.failed(now, value, "a breaker is open: that provider is being skipped")
    return self.passed(now, value)


@check("circuit_breakers", "Circuit breakers", "configured: open on failures, retry after a pause")
def circuit_breakers(self: Check, now: datetime) -> Measurement:
    conf = settings.SWITCHBOARD
    failures, rate = conf["BREAKER_CONSECUTIVE_FAILURES"], conf["BREAKER_FAILURE_RATE"]
    volume, window = conf["BREAKER_MIN_VOLUME"], conf["BREAKER_WINDOW_SECONDS"]
    cooldown = conf["BREAKER_COOLDOWN_SECONDS"]
    value = (
        f"open after {failures} consecutive failures or {rate:.0%} of ≥{volume} calls in "
        f"{window} s; one trial call after {cooldown:g} s"
    )
    problems = [
        text
        for wrong, text in (
            (failures < 1, "BREAKER_FAILURES must be at least 1"),
            (not 0 < rate <= 1, "BREAKER_FAILURE_RATE must be in (0, 1]"),
            (volume < 1, "BREAKER_MIN_VOLUME must be at least 1"),
            (window <= 0, "BREAKER_WINDOW_SECONDS must be positive"),
            (cooldown <= 0, "BREAKER_COOLDOWN_SECONDS must be positive"),
        )
        if wrong
    ]
    return self.failed(now, value, "; ".join(problems)) if problems else self.passed(now, value)


def answered_last_day(now: datetime) -> QuerySet[UsageRecord]:
    from billing.models import UsageRecord

    return (
        UsageRecord.objects.filter(
            created__gt=now - timedelta(hours=24), created__lte=now, status="ok"
        )
        .exclude(context__has_key=DRILL_METADATA_KEY)
        .order_by()
    )


@check("response_time_p95", "Response time", f"p95 ≤ {P95_TARGET_MS} ms over 24 h")
def response_time_p95(self: Check, now: datetime) -> Measurement:
    records = answered_last_day(now)
    count = records.count()
    if not count:
        return self.unknown(now, "no answered request in the last 24 hours")
    # The nearest-rank percentile, read by the database: one row, not a day of rows.
    rank = math.ceil(0.95 * count)
    p95 = records.order_by("latency_ms").values_list("latency_ms", flat=True)[rank - 1]
    value = f"p95 {p95} ms over {count:,} requests"
    return self.passed(now, value) if p95 <= P95_TARGET_MS else self.failed(now, value)


@check("keys_encrypted", "Provider keys", "stored encrypted; none overdue for rotation")
def keys_encrypted(self: Check, now: datetime) -> Measurement:
    from project.secrets import SecretUnreadable, decrypt
    from routing.models import ProviderCredential

    credentials = list(ProviderCredential.objects.enabled().select_related("provider"))
    if not credentials:
        return self.failed(now, "no provider keys", "add a credential for each provider")
    stored = [c for c in credentials if c.secret_encrypted]
    unreadable = []
    for credential in stored:
        try:
            plain = decrypt(credential.secret_encrypted)
        except SecretUnreadable:
            plain = credential.secret_encrypted  # not a token of ours: plaintext, or a lost key
        if plain == credential.secret_encrypted:
            unreadable.append(f"{credential.provider.name} {credential.environment}")
    overdue = ProviderCredential.objects.overdue(now)
    value = (
        f"{len(credentials)} keys: {len(stored)} stored encrypted, "
        f"{len(credentials) - len(stored)} from environment variables; "
        f"{len(overdue)} overdue for rotation"
    )
    problems = []
    if unreadable:
        problems.append(f"not an encrypted token: {', '.join(unreadable)}")
    if overdue:
        names = ", ".join(f"{c.provider.name} {c.environment}" for c in overdue)
        problems.append(f"overdue for rotation: {names}")
    return self.failed(now, value, "; ".join(problems)) if problems else self.passed(now, value)


@check("fallback_drill", "Fallback scenarios", "the last fallback drill passed every scenario")
def fallback_drill(self: Check, now: datetime) -> Measurement:
    from checklist.models import FallbackDrill

    drill = FallbackDrill.objects.finished().first()
    if drill is None:
        return self.unknown(now, "no fallback drill has run: manage.py fallback_drill")
    scenarios = drill.scenarios or []
    ok = sum(1 for s in scenarios if s.get("ok"))
    value = f"{ok} of {len(scenarios)} scenarios passed on {drill.finished_at:%Y-%m-%d %H:%M} UTC"
    status = PASS if drill.status == drill.Status.PASSED else FAIL
    # Measured when the drill ran, however recently this check read it.
    return Measurement(status, value, self.threshold, drill.finished_at or now, drill.error)


# -- availability and limits (health probes and rate limits, routing) ------------------


UPTIME_WINDOW_DAYS = 30


@check("uptime", "System uptime", f"≥ {UPTIME_TARGET_PCT}% of probed minutes, 30 days")
def uptime(self: Check, now: datetime) -> Measurement:
    """A minute counts as up when any deployment of the fallback chain answered a health
    probe in it: with fallback, one healthy provider keeps the system available."""
    from django.db.models import Case, Max, When
    from django.db.models.functions import TruncMinute

    from routing.models import ProbeResult

    route, chain = plan_route()
    if route is None:
        return self.failed(now, "no four-provider route", "configure the fallback chain first")
    minutes = (
        ProbeResult.objects.filter(
            deployment__in=chain,
            created__gt=now - timedelta(days=UPTIME_WINDOW_DAYS),
            created__lte=now,
        )
        .annotate(minute=TruncMinute("created"))
        .values("minute")
        .annotate(up=Max(Case(When(ok=True, then=1), default=0)))
        .order_by()
    )
    probed = minutes.count()
    if not probed:
        return self.unknown(now, "no health probe of the fallback chain in 30 days")
    up = minutes.filter(up=1).count()
    pct = (Decimal(up) / probed * 100).quantize(Decimal("0.001"))
    value = f"{pct}% ({up:,} of {probed:,} probed minutes up)"
    return self.passed(now, value) if pct >= UPTIME_TARGET_PCT else self.failed(now, value)


@check("rate_limits", "Rate limits", "every active client key has a rate limit")
def rate_limits(self: Check, now: datetime) -> Measurement:
    from django.db.models import Q

    from routing.models import ClientKey

    keys = ClientKey.objects.active().filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    if not keys.exists():
        return self.unknown(now, "no active client key")
    unlimited = keys.filter(rpm__isnull=True, tpm__isnull=True, max_concurrent__isnull=True)
    names = sorted(unlimited.values_list("name", flat=True))
    value = f"{keys.count() - len(names)} of {keys.count()} active keys limited"
    if names:
        return self.failed(now, value, f"no rpm, tpm or concurrency limit: {', '.join(names)}")
    return self.passed(now, value)


# -- quality ------------------------------------------------------------------------------


@check("satisfaction", "User satisfaction", f"≥ {SATISFACTION_TARGET_PCT}% positive feedback")
def satisfaction(self: Check, now: datetime) -> Measurement:
    """Positive / all end-user ratings (POST /api/v1/feedback) over the last 30 days."""
    from routing.quality.feedback import satisfaction as report
    from routing.quality.feedback import window

    start = now - timedelta(days=SATISFACTION_WINDOW_DAYS)
    _, total = report(window(start, now), "route")
    if total.total < SATISFACTION_MIN_RATINGS:
        return self.unknown(
            now,
            f"{total.total} rating(s) in {SATISFACTION_WINDOW_DAYS} days; at least "
            f"{SATISFACTION_MIN_RATINGS} are needed (POST /api/v1/feedback)",
        )
    share = total.share
    assert share is not None
    pct = (share * 100).quantize(Decimal("0.1"))
    value = (
        f"{pct}% positive of {total.total:,} ratings over {SATISFACTION_WINDOW_DAYS} days "
        f"({total.positive:,} positive)"
    )
    if pct >= SATISFACTION_TARGET_PCT:
        return self.passed(now, value)
    return self.failed(now, value, f"below the {SATISFACTION_TARGET_PCT}% target")


# Which checklist lines each check backs, by the line's title. The importer binds a
# new or unbound item by these; the admin can bind any item to any key.
BINDINGS: dict[str, str] = {
    "Set up billing alerts at 70%, 85%, 95% of budget": "billing_alerts",
    "Configure automatic budget alerts": "billing_alerts",
    "Set up secure key rotation schedule (monthly)": "keys_encrypted",
    "Implement key encryption and secure storage": "keys_encrypted",
    "API key security audit": "keys_encrypted",
    "Data encryption validation": "keys_encrypted",
    "Configure rate limiting parameters": "rate_limits",
    "Fine-tune rate limiting parameters": "rate_limits",
    "Prepare fallback provider configurations": "fallback_chain",
    "Implement 4-tier fallback system (AIMLAPI → OpenAI → Google → Anthropic)": "fallback_chain",
    "Set up health monitoring for all providers": "providers_healthy",
    "Check provider health status": "providers_healthy",
    "Provider Redundancy": "providers_healthy",
    "Implement circuit breaker patterns": "circuit_breakers",
    "Integration tests for fallback scenarios": "fallback_drill",
    "Validate all fallback scenarios": "fallback_drill",
    "Failover testing for all providers": "fallback_drill",
    "Set up response time tracking": "response_time_p95",
    "Response Time": "response_time_p95",
    "Validate 70% cost savings target": "cost_saving",
    "Cost savings confirmation": "cost_saving",
    "Validate full cost savings": "cost_saving",
    "Cost Savings Achieved": "cost_saving",
    "Implement real-time spend tracking": "monthly_spend",
    "Budget Adherence": "monthly_spend",
    "System Uptime": "uptime",
    "Quality Score": "satisfaction",
    "User satisfaction survey": "satisfaction",
}
