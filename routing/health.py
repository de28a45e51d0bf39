"""Health probes: a one-token completion to every enabled deployment, kept as history,
and the up / degraded / down state derived from it.

Why a completion and not the cheaper `GET /models`: a model listing is served apart
from inference, says nothing of one model, and stays up through the outages that
matter (a model erroring or overloaded, an account out of credit). A probe that
closes a half-open breaker must show the deployment can answer. The call is the
smallest each protocol allows: the user message "ping" and at most one output token,
through the deployment's own adapter (`chat_request`, `classify`, `parse_completion`)
and `routing.http`'s pooled client, with the provider's production key. It is a
real, billed call of a few tokens; `ProbeResult.cost_usd` records what each cost.

After each probe (`record_probe`):

- down: the last ``PROBE_DOWN_AFTER`` probes failed; it stays down until
  ``PROBE_UP_AFTER`` probes in a row succeed;
- degraded: one of the last ``PROBE_WINDOW`` probes failed, their median latency is
  above ``PROBE_SLOW_MS``, or the deployment's breaker is not closed;
- up: otherwise.

A state changes by a conditional UPDATE on the state it was read in, so of two
workers that see the same change only one moves it, and that one raises the alert:
`provider_down` when it goes down, `provider_up` when it leaves down, each unique on
the down episode's start, so one episode alerts once each way.

A probe also tells the deployment's shared breaker (`Breakers.record_probe`): a good
one closes a cooled-down open breaker, a bad one keeps an open breaker open. It never
opens a closed breaker; live traffic does that.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import LockError

from project.alerts import raise_alert
from project.incidents import note_unresolved, open_incident
from project.models import Alert
from project.redis import async_client, close_async_client, sync_client
from routing.breaker import Breakers, Policy, State
from routing.engine import CREDENTIAL_REFUSED, REFUSED_KEY, breaker_outcome
from routing.http import (
    Timeouts,
    UpstreamClient,
    close_upstream_client,
    transport_error,
    upstream_client,
)
from routing.models import Deployment, DeploymentHealth, Environment, ProbeResult
from routing.providers import adapter_for
from routing.providers.base import ProviderError, Target, scrub_secrets
from routing.schema import ChatRequest
from routing.table import DeploymentInfo, build_table

log = logging.getLogger(__name__)

Health = DeploymentHealth.State
# Probes send what production traffic sends: its environment's newest enabled key.
PROBE_ENVIRONMENT = Environment.PROD
# At most this many probes in flight at once, so a run does not burst at the providers.
CONCURRENCY = 8
RUN_LOCK = "sb:health:probe-lock"


@dataclass(frozen=True)
class Thresholds:
    down_after: int
    up_after: int
    window: int
    slow_ms: int

    @classmethod
    def from_settings(cls) -> Thresholds:
        conf = settings.SWITCHBOARD
        return cls(
            down_after=conf["PROBE_DOWN_AFTER"],
            up_after=conf["PROBE_UP_AFTER"],
            window=conf["PROBE_WINDOW"],
            slow_ms=conf["PROBE_SLOW_MS"],
        )

    @property
    def history(self) -> int:
        """How many of a deployment's latest probes the state depends on."""
        return max(self.down_after, self.up_after, self.window)


@dataclass(frozen=True)
class Probe:
    """One probe's outcome, as the HTTP phase saw it (no database yet)."""

    deployment_id: int
    label: str
    started: datetime
    latency_ms: int
    status_code: int | None = None
    error_code: str = ""
    error: str = ""
    cost_usd: Decimal | None = None
    breaker: State = State.CLOSED  # after this probe told it

    @property
    def ok(self) -> bool:
        return not self.error_code


@dataclass(frozen=True)
class Seen:
    """One stored probe, as the state derivation reads it (newest first)."""

    ok: bool
    latency_ms: int
    error_code: str = ""


@dataclass(frozen=True)
class Change:
    """A state change this worker made, and the alert it raised, if any."""

    deployment_id: int
    before: str
    after: str
    alert: Alert | None


def probe_request(target: DeploymentInfo) -> ChatRequest:
    """The smallest chat request: one short user turn, one output token.

    OpenAI's own API refuses `max_tokens` for its reasoning models and takes
    `max_completion_tokens` for every model; AIMLAPI and other OpenAI-compatible
    servers document `max_tokens`. The Anthropic and Gemini adapters read either.
    """
    limit = "max_completion_tokens" if target.vendor == "openai" else "max_tokens"
    return ChatRequest(
        model=target.model, messages=[{"role": "user", "content": "ping"}], params={limit: 1}
    )


# -- running the probes --------------------------------------------------------------


def run_probes() -> list[Probe]:
    """Probe every enabled deployment that has a production key, record it, move states.

    One run at a time across workers (a Redis lock): two cron schedulers, or a run
    longer than the interval, would otherwise probe twice and skew the history.
    """
    redis = sync_client()
    cutoff = settings.SWITCHBOARD["PROBE_TIMEOUT_SECONDS"]
    # Held for at most the RQ job timeout: a worker killed mid-run stops probing that long.
    lock = redis.lock(RUN_LOCK, timeout=300, blocking=False)
    if not lock.acquire():
        log.info("health probes: another worker is running them")
        return []
    try:
        targets = probe_targets()
        probes = asyncio.run(probe_all(targets, cutoff))
        for probe in probes:
            record_probe(probe)
        return probes
    finally:
        with suppress(LockError):  # it expired: another worker may hold it now
            lock.release()


def probe_targets() -> list[DeploymentInfo]:
    """Enabled deployments as production traffic sees them: with the production key.

    The routing table's own build chooses the key (the newest enabled credential), so a
    probe never sends a key the gateway would not. A deployment without one is not probed.
    """
    view = build_table(0).environments[PROBE_ENVIRONMENT]
    found: dict[int, DeploymentInfo] = {}
    for chain in view.models.values():
        for info in chain:
            found.setdefault(info.id, info)
    return sorted(found.values(), key=lambda info: info.id)


async def probe_all(targets: Sequence[DeploymentInfo], cutoff: float) -> list[Probe]:
    """Probe the targets concurrently (at most CONCURRENCY at once) on this event loop."""
    gate = asyncio.Semaphore(CONCURRENCY)
    breakers = Breakers(async_client(), Policy.from_settings())
    # Made before any clock starts: the first client of a process imports and sets up its
    # transport (hundreds of ms), which no probe's latency must include.
    http = upstream_client()

    async def one(target: DeploymentInfo) -> Probe:
        async with gate:
            return await probe(target, http, breakers, cutoff)

    try:
        results = await asyncio.gather(*(one(target) for target in targets), return_exceptions=True)
    finally:
        await close_upstream_client()
        await close_async_client()
    probes = []
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, BaseException):
            # Our bug, not the provider's failure: nothing is recorded rather than a false
            # outage, and the other deployments' probes still count.
            log.error("health probe of %s crashed", target.label, exc_info=result)
        else:
            probes.append(result)
    return probes


async def probe(
    target: DeploymentInfo, http: UpstreamClient, breakers: Breakers, cutoff: float
) -> Probe:
    """One probe of one deployment, given up after ``cutoff`` seconds; its outcome also
    goes to the deployment's breaker."""
    adapter = adapter_for(target.protocol)
    request = probe_request(target)
    wire_target = Target(target.provider, target.base_url, target.model, target.api_key)
    upstream = adapter.chat_request(wire_target, request)
    started, started_at, clock = timezone.now(), time.time(), time.monotonic()
    status: int | None = None
    cost: Decimal | None = None
    error: ProviderError | None = None
    try:
        async with asyncio.timeout(cutoff):
            response = await http.post(
                upstream, Timeouts(connect=min(target.connect_timeout, cutoff), read=cutoff)
            )
        status = response.status
        if not 200 <= status < 300:
            raise adapter.classify(status, response.headers, response.body)
        usage = adapter.parse_completion(wire_target, request, response.body).usage
        cost = target.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    except ProviderError as exc:
        error = exc
    except TimeoutError:
        error = transport_error(TimeoutError())
    latency_ms = int((time.monotonic() - clock) * 1000)
    reason = "a health probe succeeded"
    if error is not None:
        reason = f"health probe: {error.code}: {scrub_secrets(error.message, 100)}"
        if error.code == REFUSED_KEY and target.credential_id is not None:
            # As the engine does: the key audit lists the production key as refused.
            await breakers.redis.hset(
                CREDENTIAL_REFUSED, str(target.credential_id), f"{int(time.time())} {error.code}"
            )
    outcome = "ok" if error is None else breaker_outcome(error)
    breaker = await breakers.record_probe(target.id, outcome, reason, started_at)
    return Probe(
        deployment_id=target.id,
        label=target.label,
        started=started,
        latency_ms=latency_ms,
        status_code=status,
        error_code=(error.code or "error") if error is not None else "",
        error=scrub_secrets(error.message, 300) if error is not None else "",
        cost_usd=cost,
        breaker=breaker,
    )


# -- recording and deriving the state ---------------------------------------------------


def derive_state(
    recent: Sequence[Seen], previous: str, breaker: str, thresholds: Thresholds
) -> tuple[str, str]:
    """The state a deployment's latest probes (newest first) put it in, and why."""
    if not recent:
        return Health.UNKNOWN, "not probed yet"
    failed_in_a_row = _run_length(recent, ok=False)
    if failed_in_a_row >= thresholds.down_after:
        return Health.DOWN, f"{_last(failed_in_a_row)} failed ({recent[0].error_code})"
    good_in_a_row = _run_length(recent, ok=True)
    if previous == Health.DOWN and good_in_a_row < thresholds.up_after:
        return Health.DOWN, (
            f"{_last(good_in_a_row)} succeeded; it is back after {thresholds.up_after} in a row"
        )
    window = recent[: thresholds.window]
    failed = [seen for seen in window if not seen.ok]
    if failed:
        share = f"{len(failed)} of the last {len(window)} probes" if len(window) > 1 else _last(1)
        return Health.DEGRADED, f"{share} failed ({failed[0].error_code})"
    median = statistics.median(seen.latency_ms for seen in window)
    if median > thresholds.slow_ms:
        return Health.DEGRADED, (
            f"median probe latency {median:.0f} ms is above {thresholds.slow_ms} ms"
        )
    if breaker != State.CLOSED:
        return Health.DEGRADED, f"its circuit breaker is {breaker.replace('_', '-')}"
    return Health.UP, f"{_last(len(window))} succeeded"


def _last(count: int) -> str:
    return "the last probe" if count == 1 else f"the last {count} probes"


def _run_length(recent: Sequence[Seen], ok: bool) -> int:
    count = 0
    for seen in recent:
        if seen.ok is not ok:
            break
        count += 1
    return count


@transaction.atomic
def record_probe(probe: Probe, thresholds: Thresholds | None = None) -> Change | None:
    """Store a probe, derive the deployment's state, and move it (and alert) if it changed.

    One transaction: a state that moved has its alert, and a worker whose UPDATE waits
    on another's row lock finds the state changed once that one commits.
    """
    thresholds = thresholds or Thresholds.from_settings()
    ProbeResult.objects.create(
        deployment_id=probe.deployment_id,
        created=probe.started,
        ok=probe.ok,
        status_code=probe.status_code,
        latency_ms=probe.latency_ms,
        error_code=probe.error_code[:64],
        error=probe.error[:300],
        cost_usd=probe.cost_usd,
    )
    health, _ = DeploymentHealth.objects.get_or_create(deployment_id=probe.deployment_id)
    recent = [
        Seen(ok, latency_ms, error_code)
        for ok, latency_ms, error_code in ProbeResult.objects.filter(
            deployment_id=probe.deployment_id
        )
        .order_by("-created", "-id")
        .values_list("ok", "latency_ms", "error_code")[: thresholds.history]
    ]
    state, reason = derive_state(recent, health.state, probe.breaker, thresholds)
    now = timezone.now()
    current = DeploymentHealth.objects.filter(pk=health.pk, state=health.state, since=health.since)
    if state == health.state:
        current.update(reason=reason[:200], checked_at=now)
        return None
    # Only the worker whose UPDATE finds the state it read moves it, and alerts.
    if not current.update(state=state, since=now, reason=reason[:200], checked_at=now):
        return None
    alert = alert_change(probe, health.state, health.since, state, now, reason)
    log.info("%s: %s -> %s (%s)", probe.label, health.state, state, reason)
    return Change(probe.deployment_id, health.state, state, alert)


def alert_change(
    probe: Probe, before: str, down_since: datetime, after: str, now: datetime, reason: str
) -> Alert | None:
    """Raise `provider_down` on going down, `provider_up` on leaving down; nothing else.

    Both are keyed by the down episode's start (for `provider_up`, the start of the
    state it leaves), so a repeated call for the same episode writes nothing.
    """
    subject = f"deployment:{probe.deployment_id}"
    data: dict[str, Any] = {"deployment": probe.label, "from": before, "to": after}
    if after == Health.DOWN:
        alert, _ = raise_alert(
            "provider_down",
            subject,
            f"{probe.label} is down",
            severity=Alert.Severity.CRITICAL,
            period=_stamp(now),
            body=(
                f"Health probes of {probe.label} fail: {reason}. Requests fall back to the "
                "next provider of their route while it is down. Last error: "
                f"{probe.error_code} {probe.error}".strip()
            ),
            data={**data, "error_code": probe.error_code, "status_code": probe.status_code},
        )
        # One incident per provider, however many of its models go down (the runbook's).
        open_incident("provider_outage", _provider_of(probe), alert.title, summary=alert.body)
        return alert
    if before == Health.DOWN:
        minutes = max(1, round((now - down_since).total_seconds() / 60))
        alert, _ = raise_alert(
            "provider_up",
            subject,
            f"{probe.label} is back ({after})",
            severity=Alert.Severity.INFO,
            period=_stamp(down_since),
            body=f"{probe.label} answers its health probes again after about {minutes} min.",
            data={**data, "down_since": down_since.isoformat()},
        )
        note_unresolved(_provider_of(probe), alert.body)
        return alert
    return None


def _provider_of(probe: Probe) -> str:
    """The subject of a provider's outage incident: provider:<name>."""
    deployment = Deployment.objects.filter(pk=probe.deployment_id)
    return f"provider:{deployment.values_list('provider__name', flat=True).first()}"


def _stamp(moment: datetime) -> str:
    # To the microsecond: two episodes of one deployment never start in the same one.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def purge_probe_results(now: datetime | None = None) -> int:
    """Delete probe results older than PROBE_RETENTION_DAYS; return how many."""
    days = settings.SWITCHBOARD["PROBE_RETENTION_DAYS"]
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = ProbeResult.objects.filter(created__lt=cutoff).delete()
    return deleted
