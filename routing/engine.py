"""The engine: try a route's candidates in order until one answers.

For each candidate the adapter builds the request, `routing.http` sends it,
and the adapter translates the answer back. Transient failures are retried on
the same provider (full-jitter backoff, Retry-After honoured up to a cap);
permanent ones and rejections move on at once. One deadline bounds the whole
request. Every call's outcome feeds the shared circuit breaker, and every
request leaves exactly one usage entry, written to Redis before the response
completes, in the same round trip as the breaker's success record.

Streams fall back only until the first payload reaches the client; after that
a cut upstream ends the stream with an OpenAI-style error event, and the usage
seen so far is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings as django_settings
from django.utils import timezone

from billing import samples
from billing.budgets import SCRIPTS as BUDGET_SCRIPTS
from billing.budgets import BudgetInfo, Reservation, reserve_args
from billing.ledger import LEDGER_KEY, UsageEntry
from billing.money import PER_MTOK, quantize
from project.errors import ApiError
from project.resp import RespClient
from routing import (
    assignment,
    cache,
    context,
    limits,
    live,
    metrics,
    rules,
    selection,
    singleflight,
)
from routing.allowances import Allowances, AllowanceSettings
from routing.breaker import Breakers, Policy, State
from routing.cache import CacheKey, CacheSettings, Stored
from routing.http import Timeouts, UpstreamClient
from routing.limits import Admission, Lease, Limiter, RateLimited
from routing.policy import Requirements
from routing.providers import adapter_for
from routing.providers.base import (
    Adapter,
    Completion,
    FailureKind,
    ProviderError,
    StreamTranslator,
    Target,
    Usage,
)
from routing.providers.sse import SSEDecoder
from routing.quality.answers import assess
from routing.quality.judge import maybe_judge
from routing.quality.scoring import CUT
from routing.schema import END_USER_KEYS, ChatRequest
from routing.stamps import SecondStamps
from routing.table import DeploymentInfo, KeyInfo, Resolution, RoutingTable, TableCache

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
# When each client key was last used (epoch seconds); routing.jobs copies it to the admin.
KEY_LAST_USED = "sb:keys:last-used"
# When each key last used each scope ("<key id>:<scope>" -> epoch), for the key audit.
KEY_SCOPES_USED = "sb:keys:scopes-used"
# When each provider credential last served a request (epoch seconds), for the admin and audit.
CREDENTIAL_LAST_USED = "sb:credentials:last-used"
# Credentials a provider refused ("<credential id>" -> "<epoch> <code>"), for the key audit.
CREDENTIAL_REFUSED = "sb:credentials:refused"


@dataclass(frozen=True)
class EngineSettings:
    deadline_seconds: float
    retries_per_provider: int
    backoff_base_seconds: float
    backoff_cap_seconds: float
    retry_after_cap_seconds: float
    sample_rate: float = 0.0  # share of answered requests whose content is kept, redacted
    # A concurrency slot a request never gave back (its process died) is free after this.
    slot_lease_seconds: float = 120.0
    # A provider quota with less than this share left sends its deployment last.
    quota_reserve: float = 0.05
    cache: CacheSettings = field(default_factory=CacheSettings)
    allowances: AllowanceSettings = field(default_factory=AllowanceSettings)

    @classmethod
    def from_settings(cls) -> EngineSettings:
        conf = django_settings.SWITCHBOARD
        slot_lease_seconds = conf.get("RATE_LIMIT_SLOT_LEASE_SECONDS", 120.0)
        return cls(
            deadline_seconds=conf["REQUEST_DEADLINE_SECONDS"],
            retries_per_provider=conf["RETRIES_PER_PROVIDER"],
            backoff_base_seconds=conf["BACKOFF_BASE_SECONDS"],
            backoff_cap_seconds=conf["BACKOFF_CAP_SECONDS"],
            retry_after_cap_seconds=conf["RETRY_AFTER_CAP_SECONDS"],
            sample_rate=conf["SAMPLE_RATE"],
            slot_lease_seconds=slot_lease_seconds,
            quota_reserve=conf.get("UPSTREAM_QUOTA_RESERVE", 0.05),
            cache=CacheSettings.from_settings(),
            allowances=AllowanceSettings(
                seconds=conf.get("ALLOWANCE_SECONDS", 1.0),
                headroom=conf.get("ALLOWANCE_HEADROOM", 20),
                # A request held its allowance's slot as long as it would hold its own.
                ticket_seconds=slot_lease_seconds,
            ),
        )


@dataclass
class Caller:
    """Who is asking: a client key (HTTP) or nobody in particular (in-process)."""

    key: KeyInfo | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # An in-process caller has no key; it names the environment whose credentials it uses.
    keyless_environment: str = "prod"

    @property
    def environment(self) -> str:
        return self.key.environment if self.key is not None else self.keyless_environment


@dataclass
class Attempt:
    provider: str
    model: str
    deployment_id: int
    outcome: str  # ok, or the FailureKind of the failure
    status: int | None = None
    code: str = ""
    message: str = ""
    latency_ms: float = 0  # waiting on the provider, to 1 µs (the gateway's overhead is the rest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "deployment_id": self.deployment_id,
            "outcome": self.outcome,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "latency_ms": self.latency_ms,
        }


@dataclass
class Run:
    """One client request on its way through the chain."""

    request: ChatRequest
    caller: Caller
    table: RoutingTable  # the routing table of the whole request, fetched once
    resolution: Resolution
    started: float
    deadline: float
    context: context.RoutingContext = field(default_factory=context.RoutingContext)
    context_read: bool = True  # False until `Engine._write_down` has read the text
    # Why the candidates are in this order (context, rule, ranking): on the usage record.
    decision: dict[str, Any] = field(default_factory=dict)
    # The ranking, until `Engine._write_down` puts its explanation in `decision`.
    ranked: selection.Ranked | None = None
    # The rollout arm and experiment arm the request landed in (routing.assignment).
    arms: assignment.Choice | None = None
    attempts: list[Attempt] = field(default_factory=list)
    failures: list[ProviderError] = field(default_factory=list)
    # Wall-clock start of the attempt that answered: the breaker ignores successes
    # of calls that were already in flight when it opened.
    answered_call_started: float = 0.0
    reservations: list[Reservation] = field(default_factory=list)  # settled with the ledger
    # The key's rate-limit admission and the deployments' leases: settled with the ledger too.
    admission: Admission = field(default_factory=Admission)
    leases: dict[int, Lease] = field(default_factory=dict)
    estimated_tokens: int = 0
    # Set when the request may be answered from the cache; `flight` when it leads one.
    cache_key: CacheKey | None = None
    flight: singleflight.Flight | None = None
    # The budget reservation taken in the key admission's round trip (perf, issue 9):
    # the reservation and the script's reply (0: taken, else the refusing budget).
    early_reservation: tuple[Reservation, int] | None = None
    # When the request began: its budget period and its ledger row's time, so that a
    # request across midnight or a month's end counts in one period only.
    started_at: datetime = field(default_factory=timezone.now)


@dataclass
class OpenStream:
    """An upstream stream that has produced its first payloads."""

    stack: AsyncExitStack
    chunks: AsyncIterator[bytes]
    decoder: SSEDecoder
    translator: StreamTranslator
    first: list[bytes] = field(default_factory=list)


@dataclass
class Answer:
    """A whole (non-stream) answer and what it took."""

    request_id: str
    route: str
    provider: str
    model: str
    completion: Completion
    attempts: list[Attempt]
    cost_usd: Decimal
    cache: str = "miss"
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = response_headers(
            self.request_id, self.route, self.provider, self.model, self.attempts, self.cost_usd
        )
        headers["x-switchboard-cache"] = self.cache
        headers.update(self.extra_headers)
        return headers


@dataclass
class StreamAnswer:
    """A stream that has produced its first frame; `chunks()` yields SSE bytes to the end.

    The frame generator is already running, so `aclose()` always runs its cleanup
    (close upstream, write the usage, settle the budget), even if the caller
    never reads a chunk; an async generator closed before it starts would skip it.
    """

    request_id: str
    route: str
    provider: str
    model: str
    attempts: list[Attempt]
    first_frame: bytes
    frames: AsyncGenerator[bytes]
    cache: str = "miss"
    extra_headers: dict[str, str] = field(default_factory=dict)

    async def chunks(self) -> AsyncGenerator[bytes]:
        yield self.first_frame
        async for frame in self.frames:
            yield frame

    async def aclose(self) -> None:
        await self.frames.aclose()

    def headers(self) -> dict[str, str]:
        # The cost of a stream is known only at its end; clients read it from the ledger.
        headers = response_headers(
            self.request_id, self.route, self.provider, self.model, self.attempts, None
        )
        headers["x-switchboard-cache"] = self.cache
        headers.update(self.extra_headers)
        return headers


def response_headers(
    request_id: str,
    route: str,
    provider: str,
    model: str,
    attempts: list[Attempt],
    cost_usd: Decimal | None,
) -> dict[str, str]:
    headers = {
        "x-switchboard-request-id": request_id,
        "x-switchboard-provider": provider,
        "x-switchboard-model": model,
        "x-switchboard-route": route,
        "x-switchboard-attempts": str(len(attempts)),
        "x-switchboard-cache": "miss",
    }
    if cost_usd is not None:
        headers["x-switchboard-cost-usd"] = f"{cost_usd:f}"
    return headers


class Engine:
    def __init__(
        self,
        redis: RespClient,
        http: UpstreamClient,
        tables: TableCache,
        settings: EngineSettings,
        policy: Policy,
    ) -> None:
        self.redis = redis
        self.http = http
        self.tables = tables
        self._settings = settings
        self._settings_source: object = None
        scripts = (
            BUDGET_SCRIPTS,
            limits.SCRIPTS,
            cache.SCRIPTS,
            singleflight.SCRIPTS,
            live.SCRIPTS,
        )
        self.breakers = Breakers(
            redis, policy, extra_scripts=tuple(s for group in scripts for s in group.values())
        )
        self.limits = Limiter(redis, self.breakers.evalsha, run_pipeline=self.breakers.run)
        self.allowances = Allowances(self.breakers.evalsha, settings.allowances)
        self.readings = selection.Readings(self.breakers.evalsha)
        self.stamps = SecondStamps()
        self.flights = singleflight.SingleFlight(redis, self.breakers.evalsha, settings.cache)
        self._configure(settings)

    @property
    def settings(self) -> EngineSettings:
        """The tunables, re-read when Django's SWITCHBOARD setting is replaced."""
        source = django_settings.SWITCHBOARD
        if source is not self._settings_source:
            self._settings = EngineSettings.from_settings()
            self._settings_source = source
            self._configure(self._settings)
        return self._settings

    def _configure(self, settings: EngineSettings) -> None:
        self.limits.slot_lease_seconds = settings.slot_lease_seconds
        self.limits.quota_reserve = settings.quota_reserve
        self.limits.read_cache_seconds = self.breakers.policy.read_cache_seconds
        self.readings.seconds = self.breakers.policy.read_cache_seconds
        self.allowances.settings = settings.allowances
        self.flights.settings = settings.cache

    async def table(self) -> RoutingTable:
        return await self.tables.get(self.redis)

    def resolve(self, table: RoutingTable, model: str, environment: str = "prod") -> Resolution:
        resolution = table.resolve(model, environment)
        if resolution is None and any(table.resolve(model, env) for env in table.environments):
            raise ApiError(
                404,
                f"'{model}' is not available to {environment} keys: it has no route or "
                f"provider credential in the {environment} environment.",
                "model_not_found",
                param="model",
            )
        if resolution is None:
            raise ApiError(
                404,
                f"The model '{model}' does not exist: it is neither a route nor a configured "
                "model. GET /v1/models lists what this key can use.",
                "model_not_found",
                param="model",
            )
        if not resolution.chain:
            raise ApiError(
                503,
                f"'{model}' has no enabled deployment to send the request to.",
                "no_deployment",
                retry_after=30,
            )
        return resolution

    # -- one client request, whatever its shape ------------------------------------

    async def _start(self, request: ChatRequest, caller: Caller, preview: bool = False) -> Run:
        """Check and resolve a request, and admit it under its key's rate limits.

        All of it happens before any provider work: a request over its key's
        limits is refused with 429 and its usage entry written. A ``preview``
        stops before admission: the route preview's dry run of the same steps.
        """
        if caller.key is not None and not caller.key.may_use(request.model):
            raise ApiError(
                403,
                f"This key may not use '{request.model}'; it is limited to "
                f"{', '.join(sorted(caller.key.allowed_models))}.",
                "model_not_allowed",
                param="model",
            )
        # One table for the whole request: a new version mid-request cannot mix two.
        table = await self.table()
        # perf (issue 9): what the text shows (speakers, meeting type, language: about a
        # tenth of a millisecond) is read while the provider works, unless a routing rule
        # (or the preview, which shows it) needs it first. `_write_down` fills it in.
        read_now = bool(table.rules) or preview
        found = context.build(request, caller.key, read_text=read_now)
        resolution, ruled = self._ruled(table, request, caller, found)
        arms = self._arms(table, request, caller, resolution)
        resolution = arms.resolution
        needs = Requirements.of(request.metadata, caller.key.industry if caller.key else "")
        if needs.restricts:
            resolution = await self._compliant(resolution, needs)
        started = time.monotonic()
        run = Run(
            request=request,
            caller=caller,
            table=table,
            resolution=resolution,
            started=started,
            deadline=started + self.settings.deadline_seconds,
            context=found,
            context_read=read_now,
            decision={
                "context": found.as_dict() if read_now else None,
                "rule": ruled,
                **arms.decision,
            },
            arms=arms,
            estimated_tokens=limits.estimate_tokens(request),
        )
        planned = selection.plan(table, run.resolution, found.client_key, run.started_at)
        if preview or caller.key is None:
            await self._rank(run, planned, await selection.read(self, planned))
            if preview:
                return run
        # Health information is never kept, not even for a cache's while.
        shared = self.settings.cache.enabled or self.settings.cache.single_flight
        if shared and not needs.baa and cache.wanted(request):
            scope = cache.scope_of(caller.key.id if caller.key else None, caller.environment)
            run.cache_key = CacheKey.of(scope, resolution.route, request)
        if caller.key is not None:
            await self._admit(run, caller.key, planned)
        return run

    async def _admit(self, run: Run, key: KeyInfo, planned: selection.Plan) -> None:
        """Admit the request under its key's rate limits and, when no cache can answer it,
        reserve its budgets (the worst case over every candidate: the order does not
        matter); then rank its candidates.

        perf (issue 9): from this process's allowances (routing.allowances) when they cover
        it, with no round trip (the ranking reads the live numbers kept for a moment);
        else in one round trip that also reads the ranking's live numbers.
        """
        early = self._budget_reservation(run) if run.cache_key is None else None
        admitted = self.allowances.admit_key(key, run.caller.request_id, run.estimated_tokens)
        reserved = None
        if early is not None:
            reserved = self.allowances.reserve(*early)
        try:
            await self._admit_rest(run, key, planned, early, admitted, reserved)
        except RateLimited:
            raise  # the refusal handed back what it held
        except BaseException:
            # Taken from the allowances in memory and never settled otherwise (an error or a
            # cancellation before the request was served): hand it back now, as `_serve`
            # hands back what a failed request holds.
            if run.admission.lease is None and admitted is not None:
                run.admission = admitted
            if reserved is not None:
                run.reservations.append(reserved)
            run.early_reservation = None
            await asyncio.shield(self._release(run))
            raise

    async def _admit_rest(
        self,
        run: Run,
        key: KeyInfo,
        planned: selection.Plan,
        early: tuple[Reservation, Decimal] | None,
        admitted: Admission | None,
        reserved: Reservation | None,
    ) -> None:
        """`_admit` once the allowances were asked: without a round trip if they covered
        the request, else the exact admission in one."""
        if admitted is not None and (early is None or reserved is not None):
            run.admission = admitted
            if reserved is not None:
                run.early_reservation = (reserved, 0)
            if admitted.lease is not None or reserved is not None:
                run.decision["admitted"] = "allowance"  # on the usage record
            await self._rank(run, planned, await self.readings.get(planned))
            return
        try:
            run.admission = await self.limits.admit_key(
                key,
                run.caller.request_id,
                run.estimated_tokens,
                also=(
                    None
                    if early is None or reserved is not None
                    else (
                        early[0].reserve_args(early[1], run.started_at),
                        early[0].settle_args(Decimal(0)),
                    )
                ),
                before=planned.read_args() if planned.reads_live else None,
                admitted=admitted,
            )
        except RateLimited as refused:
            if reserved is not None:
                await self.breakers.evalsha(*reserved.settle_args(Decimal(0)))
            run.decision["ranking"] = {"skipped": "the key's rate limit refused the request"}
            entry = self._entry(run)
            entry.status, entry.http_status, entry.error_code = "rejected", 429, refused.code
            await self._commit(entry, None)
            raise
        snapshot = self.readings.put(planned, run.admission.before)
        await self._rank(run, planned, snapshot)
        if reserved is not None:
            run.early_reservation = (reserved, 0)
        elif early is not None:
            run.early_reservation = (early[0], int(run.admission.also))

    async def _rank(
        self, run: Run, planned: selection.Plan, snapshot: live.Snapshot | None
    ) -> None:
        run.resolution, run.ranked = await selection.finish(self, planned, snapshot, run.request)
        degraded = run.ranked.snapshot.degraded_by
        if degraded:  # the usage record says which budget sent the cheapest first
            run.request.metadata.setdefault("degraded_by", degraded)

    def _arms(
        self, table: RoutingTable, request: ChatRequest, caller: Caller, resolution: Resolution
    ) -> assignment.Choice:
        """The route's rollout arm, then its experiment arm, for the request's end user."""
        arms = assignment.choose(
            table.arms.get(caller.environment), resolution, request.end_user, caller.request_id
        )
        request.params.update(arms.parameters)
        return arms

    def _ruled(
        self,
        table: RoutingTable,
        request: ChatRequest,
        caller: Caller,
        found: context.RoutingContext,
    ) -> tuple[Resolution, dict[str, Any]]:
        """Resolve the request with the routing rules applied (routing.rules): the route
        they pick, their filters and order, and their parameters (set on the request)."""
        routes = table.environments.get(caller.environment)
        if routes is None or request.model not in routes.routes or not table.rules:
            return self.resolve(table, request.model, caller.environment), {}
        chosen, explained = rules.choose(table.rules, found, request.model)
        skipped = ""
        if chosen.route and table.resolve(chosen.route, caller.environment) is None:
            skipped = f"not available to {caller.environment} keys"
        elif chosen.route and caller.key is not None and not caller.key.may_use(chosen.route):
            # A rule may not lift the key's own limit on what it reaches.
            skipped = "not among the models this key may use"
        if skipped:
            explained["actions"].append(
                {
                    "rule": chosen.route_rule,
                    "action": f"route {chosen.route}",
                    "skipped": skipped,
                }
            )
            chosen.route = ""
        resolution = self.resolve(table, chosen.route or request.model, caller.environment)
        chain = rules.apply(chosen, resolution.chain, request, found, routes.models)
        return Resolution(resolution.route, chain), explained

    async def preview(self, request: ChatRequest, caller: Caller) -> Run:
        """The request's route, rule and ranked candidates, as `_serve` would try them;
        nothing is reserved, admitted or sent."""
        run = await self._start(request, caller, preview=True)
        await self._deprioritise(run)
        self._write_down(run)
        return run

    async def _serve[T](
        self, run: Run, call: Callable[..., Awaitable[T]]
    ) -> tuple[Run, DeploymentInfo, T]:
        """Try the chain until ``call(deployment, adapter, target)`` succeeds.

        Transient failures are retried on the same deployment; permanent ones
        and rejections move on at once. If nothing succeeds, the usage entry of
        the failure is written and an ApiError raised.
        """
        try:
            await self._reserve(run)
            await self._deprioritise(run)
            return await self._try_chain(run, call)
        except BaseException as exc:
            # Nothing will settle these now (an unexpected error, a cancelled
            # request): hand them back rather than hold them until their lease ends.
            await asyncio.shield(self._release(run, exc if isinstance(exc, ApiError) else None))
            raise

    async def _deprioritise(self, run: Run) -> None:
        """Candidates whose provider says its quota is nearly spent go last."""
        chain = run.resolution.chain
        spent = await self.limits.deprioritised(chain)
        if spent:
            ordered = [d for d in chain if d.id not in spent] + [d for d in chain if d.id in spent]
            run.resolution = Resolution(run.resolution.route, tuple(ordered))

    async def _shared(self, run: Run) -> tuple[Stored, bool] | None:
        """The answer from the cache (True) or from an identical request in flight (False).

        None when the request must be answered by a provider; if it leads a
        flight, `run.flight` is set and its followers wait for its outcome.
        """
        if run.cache_key is None:
            return None
        try:
            found = await self.flights.lookup(run.cache_key, run.caller.request_id)
            while isinstance(found, singleflight.Flight) and not found.leading:
                try:
                    outcome = await self.flights.follow(found, run.deadline)
                except singleflight.FollowerTimeout:
                    raise await self._follower_failed(run, None) from None
                if isinstance(outcome, ApiError):
                    raise await self._follower_failed(run, outcome)
                if isinstance(outcome, Stored):
                    return outcome, False
                found = outcome
        except BaseException:
            await asyncio.shield(self._release(run))
            raise
        if isinstance(found, singleflight.Hit):
            return found.stored, True
        run.flight = found
        return None

    async def _follower_failed(self, run: Run, error: ApiError | None) -> ApiError:
        """Record a follower whose leader failed (its error is shared) or outlived its deadline."""
        if error is None:
            error = ApiError(
                504,
                "An identical request was being answered, and its answer did not arrive "
                "before this request's deadline.",
                "deadline_exceeded",
            )
        entry = self._entry(run)
        entry.status, entry.http_status, entry.error_code = "error", error.status, error.code
        entry.deduplicated = True
        await self._commit(entry, None, commands=self._settlement(run, 0))
        return error

    async def _answer_shared(self, run: Run, stored: Stored, hit: bool) -> None:
        """Write the usage entry of an answer no provider was called for: it costs nothing.

        Its tokens are 0, as no provider counted any; `answer_of` names the request
        whose call made the answer.
        """
        entry = self._entry(run)
        entry.provider, entry.model = stored.provider, stored.model
        entry.deployment_id = stored.deployment_id
        entry.cache_hit, entry.deduplicated = hit, not hit
        entry.context["answer_of"] = stored.request_id
        await self._commit(entry, None, commands=self._settlement(run, 0))

    def _settlement(
        self,
        run: Run,
        used_tokens: int,
        answered: DeploymentInfo | None = None,
        stored: Stored | None = None,
        error: ApiError | None = None,
    ) -> list[list[Any]]:
        """EVALSHA arguments that end a request's hold on shared state, for the ledger's pipeline.

        They correct the tokens its rate limits took, free its concurrency slot,
        keep its answer in the cache, and hand its flight's outcome to the
        followers. They are taken off the run, so nothing is settled twice.
        """
        commands = []
        lease = run.admission.lease
        if lease is not None:
            if lease.settle_locally is None or not lease.settle_locally(used_tokens):
                commands.append(lease.settle_args(used_tokens))
            run.admission = Admission(None, run.admission.verdict)
        for deployment_id, held in run.leases.items():
            if answered is not None and deployment_id == answered.id:
                commands.append(held.settle_args(used_tokens))
            else:
                # A candidate that failed keeps the tokens it took (the provider counted
                # that call) and frees its concurrency slot.
                commands.append(held.release_args())
        run.leases = {}
        if stored is not None and run.cache_key is not None and self.settings.cache.enabled:
            put = cache.put_args(run.cache_key, stored, self.settings.cache)
            if put is not None:
                commands.append(put)
        if run.flight is not None and run.flight.leading:
            if stored is not None:
                outcome = stored.encode()
            elif error is not None:
                outcome = cache.encode_error(error)
            else:
                outcome = b""  # gave up: the followers look again, and one leads
            commands.append(run.flight.release_args(outcome))
        run.flight = None
        return commands

    async def _compliant(self, resolution: Resolution, needs: Requirements) -> Resolution:
        """Only the candidates the request's data may go to; refuse rather than leak."""
        chain = tuple(d for d in resolution.chain if needs.admits(d))
        if not chain:
            raise ApiError(
                403,
                f"This request {needs.describe()}, and none of the providers of "
                f"'{resolution.route}' does ({', '.join(d.provider for d in resolution.chain)}). "
                "Nothing was sent to any provider.",
                "no_compliant_provider",
                param="metadata",
            )
        readings = await self.breakers.read([d.id for d in chain])
        now = time.time()
        if all(
            readings[d.id].state is State.OPEN
            and not readings[d.id].cooled_down(self.breakers.policy, now)
            for d in chain
        ):
            # Elsewhere a request with every breaker open is tried anyway; here the
            # only other candidates are ones the data may not go to.
            raise ApiError(
                403,
                f"This request {needs.describe()}; the providers that may receive it "
                f"({', '.join(d.provider for d in chain)}) are unavailable now, and the "
                "others may not receive it. Nothing was sent to any provider.",
                "no_compliant_provider",
                param="metadata",
            )
        return Resolution(resolution.route, chain)

    async def _try_chain[T](
        self, run: Run, call: Callable[..., Awaitable[T]]
    ) -> tuple[Run, DeploymentInfo, T]:
        async with aclosing(self._candidates(run.resolution.chain)) as candidates:
            chain = run.resolution.chain
            async for deployment in candidates:
                adapter = adapter_for(deployment.protocol)
                target = adapter_target(deployment)
                later = len(chain) - 1 - chain.index(deployment)
                limited = await self._admit_deployment(run, deployment)
                if limited is not None:
                    run.attempts.append(failed_attempt(deployment, limited, time.monotonic()))
                    run.failures.append(limited)
                    continue
                exhausted_budget = await self._reserve_for_provider(run, deployment)
                if exhausted_budget is not None:
                    resets = exhausted_budget.period_end(run.started_at)
                    exhausted = ProviderError(
                        FailureKind.REJECTED,
                        f"the {exhausted_budget.label} budget of "
                        f"${exhausted_budget.amount_usd.normalize():f} is exhausted until "
                        f"{resets:%Y-%m-%d %H:%M} UTC",
                        code="budget_exceeded",
                        retry_after=(resets - timezone.now()).total_seconds(),
                    )
                    run.attempts.append(failed_attempt(deployment, exhausted, time.monotonic()))
                    run.failures.append(exhausted)
                    continue
                retry = 0
                while True:
                    attempt_started = time.monotonic()
                    wall_started = time.time()
                    try:
                        async with asyncio.timeout(attempt_budget(run.deadline, later)):
                            result = await call(deployment, adapter, target)
                    except (ProviderError, TimeoutError) as exc:
                        wait = await self._failed(run, deployment, exc, attempt_started, retry)
                        if wait is None:
                            await self._release_provider_reservations(run)
                            await self._free_slot(run, deployment)
                            break
                        retry += 1
                        await asyncio.sleep(wait)
                        continue
                    run.attempts.append(ok_attempt(deployment, attempt_started))
                    run.answered_call_started = wall_started
                    return run, deployment, result
                if time.monotonic() >= run.deadline:
                    break
        raise await self._give_up(run)

    async def _cost(self, deployment: DeploymentInfo, usage: Usage) -> Decimal:
        """What the call cost: its per-token price, or its share of the provider's plan."""
        plan = deployment.plan
        if plan is None:
            return deployment.cost(
                usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
            )
        tokens = usage.total_tokens
        key = plan.key(timezone.now())
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(key, tokens)
        pipe.expire(key, 40 * 86400)  # the month's count is kept into the next for reports
        used_after, _ = await pipe.execute()
        return plan.cost(int(used_after) - tokens, tokens)

    async def _cost_or_list_price(self, deployment: DeploymentInfo, usage: Usage) -> Decimal:
        """For a stream's last act: if the plan's counter cannot be read, the per-token
        price, so the usage row and the budget settlement are still written."""
        try:
            return await self._cost(deployment, usage)
        except Exception:
            log.exception("plan pricing failed for %s; per-token price used", deployment.label)
            return deployment.cost(
                usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
            )

    def _budget_reservation(self, run: Run) -> tuple[Reservation, Decimal] | None:
        """The reservation of the worst-case cost on every budget that applies (not taken
        yet: from an allowance, or by its `reserve_args`), and that cost; None when no
        budget applies."""
        budgets = [
            b
            for b in run.table.budgets
            if b.applies_to(run.caller.key.name if run.caller.key else "", run.resolution.route)
        ]
        if not budgets:
            return None
        worst = worst_case_cost(run.request, run.resolution.chain)
        return Reservation.of(budgets, run.caller.request_id, run.started_at), worst

    async def _reserve(self, run: Run) -> None:
        """Reserve the worst-case cost on every budget that applies, or refuse with 429."""
        if run.early_reservation is not None:  # taken with the key's admission
            reservation, refused = run.early_reservation
            run.early_reservation = None
        else:
            planned = self._budget_reservation(run)
            if planned is None:
                return
            exact, worst = planned
            reservation = self.allowances.reserve(exact, worst) or exact
            refused = 0
            if reservation is exact:
                args = exact.reserve_args(worst, run.started_at)
                refused = int(await self.breakers.evalsha(*args))
        budgets = list(reservation.budgets)
        now = run.started_at
        if not refused:
            # Past a budget's degrade point the ranking already put the cheapest first
            # (routing.selection), after open breakers, caps and the quality floor.
            run.reservations.append(reservation)
            return
        worst = worst_case_cost(run.request, run.resolution.chain)
        budget = budgets[refused - 1]
        resets = budget.period_end(now)
        error = ApiError(
            429,
            f"The {budget.label} budget of ${budget.amount_usd.normalize():f} is exhausted: "
            "this request "
            f"could cost up to ${worst:.6f}. It resets at {resets:%Y-%m-%d %H:%M} UTC.",
            "budget_exceeded",
            retry_after=(resets - now).total_seconds(),
        )
        entry = self._entry(run)
        entry.status, entry.http_status, entry.error_code = "rejected", 429, "budget_exceeded"
        await self._commit(entry, None)
        raise error

    async def _reserve_for_provider(
        self, run: Run, deployment: DeploymentInfo
    ) -> BudgetInfo | None:
        """Reserve on the budgets of this candidate's provider; the exhausted one, if any."""
        budgets = [
            b
            for b in run.table.budgets
            if b.scope == "provider" and b.scope_ref == deployment.provider
        ]
        if not budgets:
            return None
        worst = worst_case_cost(run.request, (deployment,))
        request_id = f"{run.caller.request_id}:{deployment.provider}"
        reservation, args = reserve_args(budgets, request_id, worst, run.started_at)
        refused = int(await self.breakers.evalsha(*args))
        if refused:
            return budgets[refused - 1]
        run.reservations.append(reservation)
        return None

    async def _admit_deployment(self, run: Run, deployment: DeploymentInfo) -> ProviderError | None:
        """Take from the deployment's own limits; when it is at them, why it is passed over."""
        lease, refused = await self.limits.admit_deployment(
            deployment, run.caller.request_id, run.estimated_tokens
        )
        if lease is not None:
            run.leases[deployment.id] = lease
        if refused is None:
            return None
        if refused.refused == "concurrency":
            message = (
                f"{deployment.label} has {deployment.max_concurrency} requests in flight, its cap"
            )
        else:
            which = "tokens" if refused.refused == "tokens" else "requests"
            limit = deployment.tpm if which == "tokens" else deployment.rpm
            message = f"{deployment.label} is at its limit of {limit} {which} per minute"
        return ProviderError(
            FailureKind.REJECTED, message, code=DEPLOYMENT_LIMITED, retry_after=refused.wait_seconds
        )

    async def _release(self, run: Run, error: ApiError | None = None) -> None:
        for reservation in run.reservations:
            await self.breakers.evalsha(*reservation.settle_args(Decimal(0)))
        run.reservations = []
        for args in self._settlement(run, 0, error=error):
            await self.breakers.evalsha(*args)

    async def _free_slot(self, run: Run, deployment: DeploymentInfo) -> None:
        """A candidate given up on stops counting as in flight (its tokens stay taken)."""
        held = run.leases.pop(deployment.id, None)
        if held is not None:
            await self.breakers.evalsha(*held.release_args())

    async def _release_provider_reservations(self, run: Run) -> None:
        """A candidate that failed hands its provider's reservation back."""
        kept = []
        for reservation in run.reservations:
            if all(b.scope == "provider" for b in reservation.budgets):
                await self.breakers.evalsha(*reservation.settle_args(Decimal(0)))
            else:
                kept.append(reservation)
        run.reservations = kept

    async def _failed(
        self,
        run: Run,
        deployment: DeploymentInfo,
        exc: ProviderError | TimeoutError,
        attempt_started: float,
        retry: int,
    ) -> float | None:
        """Record a failed attempt; the seconds to wait before retrying, or None to move on."""
        error = deadline_error() if isinstance(exc, TimeoutError) else exc
        error = scrubbed(error, deployment)
        run.attempts.append(failed_attempt(deployment, error, attempt_started))
        run.failures.append(error)
        await self._record_failure(deployment, error)
        return self._retry_wait(error, retry, run.deadline)

    # -- non-stream ---------------------------------------------------------------

    async def complete(
        self,
        request: ChatRequest,
        caller: Caller,
        deliver: Callable[[Answer], Awaitable[None]] | None = None,
    ) -> Answer:
        """Answer ``request``. ``deliver``, if given, hands the answer to its client as soon
        as the usage entry is written (and the answer queued for the judge, if sampled);
        the metrics, which no client waits for, count it after that (perf, issue 9: about
        30 µs per answer). uvicorn's send does not yield to the event loop unless the
        client's socket is full, so a scrape that follows the answer finds it counted."""

        async def call(deployment: DeploymentInfo, adapter: Adapter, target: Target) -> Completion:
            upstream = adapter.chat_request(target, request)
            response = await self.http.post(upstream, timeouts(deployment), self._meanwhile(run))
            failed = response.status >= 300
            quota = adapter.quota(
                response.status, response.headers, response.body if failed else b""
            )
            await self.limits.observe(deployment, quota)
            if failed:
                raise adapter.classify(response.status, response.headers, response.body)
            return adapter.parse_completion(target, request, response.body)

        run = await self._start(request, caller)
        shared = await self._shared(run)
        if shared is not None:
            stored, hit = shared
            await self._answer_shared(run, stored, hit)
            answer = Answer(
                caller.request_id,
                run.resolution.route,
                stored.provider,
                stored.model,
                Completion(stored.body, stored.usage, stored.finish_reason, stored.text),
                [],
                Decimal(0),
                cache="hit" if hit else "miss",
                extra_headers=shared_headers(run, hit),
            )
            if deliver is not None:
                await deliver(answer)
            return answer
        run, deployment, completion = await self._serve(run, call)
        usage = completion.usage
        try:
            cost = await self._cost(deployment, usage)
        except BaseException:
            await asyncio.shield(self._release(run))
            raise
        entry = self._entry(run)
        fill_usage(entry, deployment, usage, cost)
        assess(
            entry,
            request,
            run.context,
            completion.text,
            completion.finish_reason,
            run.table.quality,
            run.table.latency_target(run.resolution.route),
        )
        # perf (issue 9): a success on a breaker known to be closed only adds to its counts
        # and to the live numbers; it is recorded once the answer is delivered (with no one
        # to deliver to, in the commit: one round trip rather than two).
        later = deliver is not None and self.breakers.known_closed(deployment.id)
        await self._commit(
            entry,
            deployment,
            "ok",
            observe=False,
            record=not later,
            started_at=run.answered_call_started,
            reservations=run.reservations,
            sample=self._sample(run, entry, completion.text),
            commands=self._settlement(
                run,
                usage.total_tokens,
                deployment,
                stored=Stored(
                    completion.body,
                    deployment.provider,
                    deployment.model,
                    deployment.id,
                    caller.request_id,
                    usage,
                    completion.finish_reason,
                )
                if run.cache_key is not None
                else None,
            ),
        )
        answered_at = time.time()  # the request's duration ends here, not at its delivery
        try:
            await maybe_judge(entry, request, completion.text)
            answer = Answer(
                caller.request_id,
                run.resolution.route,
                deployment.provider,
                deployment.model,
                completion,
                run.attempts,
                cost,
                extra_headers=run.admission.headers(),
            )
            if deliver is not None:
                await deliver(answer)
        finally:
            # The entry is written: count it, delivered or not.
            metrics.observe(entry, answered_at)
            if later:
                started = run.answered_call_started
                await asyncio.shield(self._record_success(entry, deployment, started))
        return answer

    # -- stream ------------------------------------------------------------------

    async def open_stream(self, request: ChatRequest, caller: Caller) -> StreamAnswer:
        """Fall back until some candidate has produced its first payload."""

        async def call(deployment: DeploymentInfo, adapter: Adapter, target: Target) -> OpenStream:
            stack = AsyncExitStack()
            try:
                upstream = adapter.chat_request(target, request)
                stream = await stack.enter_async_context(
                    self.http.stream(upstream, timeouts(deployment), self._meanwhile(run))
                )
                if stream.status >= 300:
                    body = await stream.read()
                    quota = adapter.quota(stream.status, stream.headers, body)
                    await self.limits.observe(deployment, quota)
                    raise adapter.classify(stream.status, stream.headers, body)
                await self.limits.observe(deployment, adapter.quota(stream.status, stream.headers))
                opened = OpenStream(
                    stack, stream.chunks(), SSEDecoder(), adapter.stream_translator(target, request)
                )
                opened.first = await first_payloads(
                    opened.chunks, opened.decoder, opened.translator
                )
                return opened
            except BaseException:
                await stack.aclose()
                raise

        run = await self._start(request, caller)
        shared = await self._shared(run)
        if shared is not None:
            stored, hit = shared
            await self._answer_shared(run, stored, hit)
            first, *rest = cache.stream_frames(stored, request.include_usage)
            return StreamAnswer(
                caller.request_id,
                run.resolution.route,
                stored.provider,
                stored.model,
                [],
                first,
                replay(rest),
                cache="hit" if hit else "miss",
                extra_headers=shared_headers(run, hit),
            )
        run, deployment, opened = await self._serve(run, call)
        entry = self._entry(run)
        frames = self._stream_body(opened, entry, deployment, request, run)
        try:
            first_frame = await anext(frames)
        except BaseException:
            await frames.aclose()
            raise
        return StreamAnswer(
            caller.request_id,
            run.resolution.route,
            deployment.provider,
            deployment.model,
            run.attempts,
            first_frame,
            frames,
            extra_headers=run.admission.headers(),
        )

    async def _stream_body(
        self,
        opened: OpenStream,
        entry: UsageEntry,
        deployment: DeploymentInfo,
        request: ChatRequest,
        run: Run,
    ) -> AsyncGenerator[bytes]:
        decoder, translator = opened.decoder, opened.translator
        error = None
        finished = False
        try:
            for payload in opened.first:
                yield frame(payload)
            async for chunk in opened.chunks:
                for event in decoder.feed(chunk):
                    for payload in translator.feed(event):
                        yield frame(payload)
            for event in decoder.flush():
                for payload in translator.feed(event):
                    yield frame(payload)
            for payload in translator.finish():
                yield frame(payload)
            finished = True
        except ProviderError as exc:
            error = scrubbed(exc, deployment)
        finally:
            await opened.stack.aclose()
            # Written whether the stream ended well, was cut upstream, or the client left.
            usage, estimated = stream_usage(translator, request)
            entry.usage_estimated = estimated
            fill_usage(
                entry,
                deployment,
                usage,
                await self._cost_or_list_price(deployment, usage),
            )
            if error is not None:
                entry.status, entry.error_code = "partial", error.code or "stream_cut"
                entry.attempts[-1].update(
                    outcome=error.kind.value, code=error.code, message=error.message
                )
            elif not finished:  # the caller stopped reading: charged for what was generated
                entry.status, entry.error_code = "partial", "client_closed"
            if finished or error is not None:  # a client that left is not the answer's fault
                finish = translator.finish_reason if error is None else CUT
                assess(
                    entry,
                    request,
                    run.context,
                    translator.text,
                    finish,
                    run.table.quality,
                    run.table.latency_target(run.resolution.route),
                )
            # Committed before the client hears of a cut, so an in-process
            # caller that stops at the error still finds the usage recorded.
            outcome = breaker_outcome(error) if error else "ok"
            reason = f"{error.code}: {error.message}" if error else ""
            await self._commit(
                entry,
                deployment,
                outcome,
                reason,
                started_at=run.answered_call_started,
                reservations=run.reservations,
                sample=self._sample(run, entry, translator.text),
                commands=self._settlement(
                    run,
                    usage.total_tokens,
                    deployment,
                    stored=stream_answer(translator, usage, deployment, run)
                    if finished and error is None
                    else None,
                ),
            )
            if finished and error is None:
                await maybe_judge(entry, request, translator.text)
        if error is not None:
            yield frame(stream_error_payload(error))
        elif request.include_usage:
            yield frame(usage_chunk(translator, usage))
        yield DONE

    # -- shared -----------------------------------------------------------------

    async def _candidates(
        self, chain: tuple[DeploymentInfo, ...]
    ) -> AsyncGenerator[DeploymentInfo]:
        """The chain in order, skipping open breakers; if all are open, try them anyway."""
        readings = await self.breakers.read([d.id for d in chain])
        now = time.time()
        skipped = []
        tried = 0
        for deployment in chain:
            reading = readings[deployment.id]
            if reading.state is State.CLOSED:
                tried += 1
                yield deployment
            elif reading.state is State.OPEN and not reading.cooled_down(self.breakers.policy, now):
                skipped.append(deployment)
            elif await self.breakers.acquire_trial(deployment.id):
                tried += 1
                yield deployment
            else:
                skipped.append(deployment)
        if tried == 0:
            # Every breaker is open: a request that is not even tried is a sure
            # failure, while a provider may well have recovered.
            for deployment in skipped:
                yield deployment

    def _retry_wait(self, error: ProviderError, retry: int, deadline: float) -> float | None:
        """Seconds to wait before retrying the same provider, or None to move on."""
        if error.kind is not FailureKind.TRANSIENT or retry >= self.settings.retries_per_provider:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.settings.retry_after_cap_seconds:
                return None  # the next provider is likely sooner than this one
            wait = error.retry_after
        else:
            ceiling = min(
                self.settings.backoff_cap_seconds, self.settings.backoff_base_seconds * 2**retry
            )
            wait = random.uniform(0, ceiling)
        if time.monotonic() + wait >= deadline:
            return None
        return wait

    async def _record_failure(self, deployment: DeploymentInfo, error: ProviderError) -> None:
        if error.code == REFUSED_KEY and deployment.credential_id is not None:
            # The key of one environment is bad, not the deployment: other
            # environments' keys must keep it, so the shared breaker is not told.
            await self.redis.hset(
                CREDENTIAL_REFUSED,
                str(deployment.credential_id),
                f"{int(time.time())} {error.code}",
            )
        outcome = breaker_outcome(error)
        if outcome is not None:

            def build(pipe: Any) -> None:
                reason = f"{error.code}: {error.message}"
                self.breakers.queue_record(pipe, deployment.id, outcome, reason, with_live=True)

            await self.breakers.run(build)

    def _meanwhile(self, run: Run) -> Callable[[], None] | None:
        """What to do while the provider works: write down what the usage record still
        lacks (`_write_down`), if anything."""
        if run.context_read and run.ranked is None:
            return None
        return lambda: self._write_down(run)

    def _write_down(self, run: Run) -> None:
        """Complete the request's decision for its usage record, once: the context its
        text shows, and why the candidates were ranked as they were. Called while the
        provider works on the first attempt (`UpstreamClient.post`'s ``meanwhile``), or
        by the first usage entry, whichever comes first (perf, issue 9)."""
        if run.ranked is not None:
            ranked, run.ranked = run.ranked, None
            try:
                run.decision["ranking"] = ranked.explain()
            except Exception:  # runs in `meanwhile`, which must not raise; for the record only
                log.exception("explaining the ranking of %s failed", run.caller.request_id)
                run.decision["ranking"] = {"error": "the explanation failed; it was logged"}
        if run.context_read:
            return
        run.context_read = True
        try:
            context.read_text_of(run.context, run.request, run.caller.key)
        except Exception:  # detection is for the record here: never worth the request
            log.exception("reading the context of %s failed", run.caller.request_id)
        run.decision["context"] = run.context.as_dict()

    def _entry(self, run: Run) -> UsageEntry:
        self._write_down(run)
        caller, request = run.caller, run.request
        return UsageEntry(
            request_id=caller.request_id,
            created=run.started_at,
            status="ok",
            client_key_id=caller.key.id if caller.key else None,
            client_key_name=caller.key.name if caller.key else "",
            route=run.resolution.route,
            latency_ms=int((time.monotonic() - run.started) * 1000),
            streamed=request.stream,
            attempts=[a.as_dict() for a in run.attempts],
            end_user=request.end_user,
            # The end user's id is kept once, in its own column, for forget_user to find.
            context={k: v for k, v in request.metadata.items() if k not in END_USER_KEYS},
            decision=run.decision,
            experiment=run.arms.experiment if run.arms else "",
            arm=run.arms.arm if run.arms else "",
            rollout_arm=run.arms.rollout_arm if run.arms else "",
        )

    def _sample(self, run: Run, entry: UsageEntry, completion: str) -> samples.SampleEntry | None:
        """The request's content, redacted, if sampling keeps this one (none by default)."""
        if not samples.wanted(self.settings.sample_rate, run.request.metadata):
            return None
        if Requirements.of(
            run.request.metadata, run.caller.key.industry if run.caller.key else ""
        ).baa:
            return None  # health information: the redactor does not know it, so never kept
        try:
            return samples.sample(entry, run.request.messages, completion)
        except Exception:  # a sample is never worth losing the usage record it rides with
            log.exception("content sample of %s dropped", entry.request_id)
            return None

    async def _commit(
        self,
        entry: UsageEntry,
        deployment: DeploymentInfo | None,
        outcome: str | None = "ok",
        reason: str = "",
        started_at: float | None = None,
        reservations: Sequence[Reservation] = (),
        sample: samples.SampleEntry | None = None,
        commands: Sequence[list[Any]] = (),
        observe: bool = True,
        record: bool = True,
    ) -> None:
        """Write the usage entry, the breaker's record, the budget settlement, the
        content sample and `commands` (from `_settlement`), if any, in one trip; then
        count the entry in the metrics. ``observe=False``, ``record=False``: the caller
        counts it, and records the breaker's outcome, itself (`complete`)."""
        raw = entry.encode()
        sampled = sample.encode() if sample is not None else None

        def build(pipe: Any) -> None:
            pipe.rpush(LEDGER_KEY, raw)
            now = int(time.time())
            # perf (issue 9): a stamp this process already wrote this second is skipped.
            if entry.client_key_id is not None and self.stamps.fresh(
                "key", entry.client_key_id, now
            ):
                pipe.hset(KEY_LAST_USED, entry.client_key_id, now)
                pipe.hset(KEY_SCOPES_USED, f"{entry.client_key_id}:chat", now)
            if (
                deployment is not None
                and outcome == "ok"
                and deployment.credential_id is not None
                and self.stamps.fresh("credential", deployment.credential_id, now)
            ):
                pipe.hset(CREDENTIAL_LAST_USED, deployment.credential_id, now)
            if deployment is not None and outcome is not None and record:
                self._queue_outcome(pipe, entry, deployment, outcome, reason, started_at)
            for reservation in reservations:
                pipe.execute_command("EVALSHA", *reservation.settle_args(entry.cost_usd))
            if sampled is not None:
                pipe.rpush(samples.SAMPLES_KEY, sampled)
            for args in commands:
                pipe.execute_command("EVALSHA", *args)

        await self.breakers.run(build)
        if observe:
            metrics.observe(entry)  # after the write, so the counters equal the ledger

    def _queue_outcome(
        self,
        pipe: Any,
        entry: UsageEntry,
        deployment: DeploymentInfo,
        outcome: str,
        reason: str,
        started_at: float | None,
    ) -> None:
        """Add the entry's outcome on ``deployment`` to ``pipe``: its breaker and its live
        numbers, in one script call (a success with its answering attempt's latency)."""
        answered = entry.attempts[-1] if entry.attempts else {}
        latency = answered.get("latency_ms") if outcome == "ok" else None
        self.breakers.queue_record(pipe, deployment.id, outcome, reason, started_at, True, latency)

    async def _record_success(
        self, entry: UsageEntry, deployment: DeploymentInfo, started_at: float
    ) -> None:
        """Record a delivered answer's success in its breaker and live numbers. A failure
        here is logged, not raised: the client has its answer and the ledger its entry;
        only a count is lost."""
        try:
            await self.breakers.run(
                lambda pipe: self._queue_outcome(pipe, entry, deployment, "ok", "", started_at)
            )
        except Exception:
            log.warning("the success of %s was not recorded", entry.request_id, exc_info=True)

    async def _give_up(self, run: Run) -> ApiError:
        attempts, failures = run.attempts, run.failures
        if failures and all(f.code == "budget_exceeded" for f in failures):
            error = ApiError(
                429,
                "Every candidate's provider budget is exhausted: "
                + "; ".join(dict.fromkeys(f.message for f in failures))
                + ".",
                "budget_exceeded",
                retry_after=min(f.retry_after or 3600 for f in failures),
            )
        elif failures and all(f.code in (DEPLOYMENT_LIMITED, "budget_exceeded") for f in failures):
            error = RateLimited(
                429,
                f"Every candidate of '{run.resolution.route}' is at its own rate limit: "
                + "; ".join(dict.fromkeys(f.message for f in failures))
                + ".",
                "rate_limit_exceeded",
                retry_after=min(f.retry_after or 60 for f in failures),
            )
        elif failures and all(f.kind is FailureKind.REJECTED for f in failures):
            first = failures[0]
            error = ApiError(
                400,
                f"{attempts[0].provider} rejected the request: {first.message}",
                first.code or "invalid_request",
            )
        else:
            summary = (
                "; ".join(f"{a.provider}/{a.model}: {a.code or a.outcome}" for a in attempts)
                or "no provider was tried"
            )
            route = run.resolution.route
            if failures and all(f.kind is FailureKind.PERMANENT for f in failures):
                # Bad keys or no credit everywhere: retrying will not help, so no Retry-After.
                error = ApiError(
                    502,
                    f"No provider can serve '{route}' ({summary}). An operator must act.",
                    "all_providers_refused",
                )
            else:
                waits = [f.retry_after for f in failures if f.retry_after]
                error = ApiError(
                    503,
                    f"No provider could answer '{route}' ({summary}). Try again shortly.",
                    "all_providers_failed",
                    retry_after=max(1.0, min(waits)) if waits else 1.0,
                )
        entry = self._entry(run)
        entry.status, entry.http_status, entry.error_code = "error", error.status, error.code
        await self._commit(
            entry,
            None,
            reservations=run.reservations,
            commands=self._settlement(run, 0, error=error),
        )
        run.reservations = []  # settled (to nothing) with the failure's row
        return error


# Output tokens assumed when a request sets no limit and its model declares none.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def worst_case_cost(request: ChatRequest, chain: tuple[DeploymentInfo, ...]) -> Decimal:
    """The most this request can cost on any candidate: what a budget must hold back."""
    # A token is at least one byte of UTF-8, so the serialised conversation (text,
    # tool calls, tool definitions) bounds the prompt from above in any language.
    serialised = len(orjson.dumps([request.messages, request.params.get("tools")]))
    worst = Decimal(0)
    for deployment in chain:
        prompt = min(serialised, deployment.context_window)
        output = (
            request.max_output_tokens or deployment.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
        )
        if deployment.plan is not None:
            cost = quantize((prompt + output) * deployment.plan.highest_rate_per_mtok() / PER_MTOK)
        else:
            cost = deployment.cost(prompt, output)
        worst = max(worst, cost)
    return worst


# A candidate passed over because it is at its own rate limit (routing.limits).
DEPLOYMENT_LIMITED = "deployment_rate_limited"

# The provider refused the credential itself (401): that environment's key is at fault.
REFUSED_KEY = "invalid_api_key"


def breaker_outcome(error: ProviderError) -> str | None:
    """What a failure tells the breaker; None when the provider is not at fault.

    A rejected request is the client's doing; a refused key is one
    environment's credential, while the breaker is shared by every environment.
    """
    if error.kind is FailureKind.REJECTED or error.code == REFUSED_KEY:
        return None
    return "fatal" if error.kind is FailureKind.PERMANENT else "fail"


# An attempt may use at most this share of the time left while other candidates
# wait, so that a provider that hangs cannot spend the whole deadline.
ATTEMPT_SHARE = 0.5


def attempt_budget(deadline: float, later_candidates: int) -> float:
    remaining = max(0.0, deadline - time.monotonic())
    if later_candidates == 0:
        return remaining
    return max(min(remaining, 1.0), remaining * ATTEMPT_SHARE)


def adapter_target(deployment: DeploymentInfo) -> Target:
    return Target(deployment.provider, deployment.base_url, deployment.model, deployment.api_key)


def timeouts(deployment: DeploymentInfo) -> Timeouts:
    return Timeouts(connect=deployment.connect_timeout, read=deployment.read_timeout)


def deadline_error() -> ProviderError:
    return ProviderError(
        FailureKind.TRANSIENT, "the request deadline passed while waiting", code="deadline"
    )


def scrubbed(error: ProviderError, deployment: DeploymentInfo) -> ProviderError:
    """Providers echo parts of keys in auth errors; never pass a key on."""
    key = deployment.api_key
    if key and key in error.message:
        error.message = error.message.replace(key, "[redacted]")
    return error


def failed_attempt(deployment: DeploymentInfo, error: ProviderError, started: float) -> Attempt:
    return Attempt(
        deployment.provider,
        deployment.model,
        deployment.id,
        error.kind.value,
        error.status,
        error.code,
        error.message[:300],
        round((time.monotonic() - started) * 1000, 3),
    )


def ok_attempt(deployment: DeploymentInfo, started: float) -> Attempt:
    return Attempt(
        deployment.provider,
        deployment.model,
        deployment.id,
        "ok",
        200,
        latency_ms=round((time.monotonic() - started) * 1000, 3),
    )


def fill_usage(entry: UsageEntry, deployment: DeploymentInfo, usage: Usage, cost: Decimal) -> None:
    entry.provider = deployment.provider
    entry.model = deployment.model
    entry.deployment_id = deployment.id
    entry.prompt_tokens = usage.prompt_tokens
    entry.completion_tokens = usage.completion_tokens
    entry.cached_tokens = usage.cached_tokens
    entry.cost_usd = cost
    entry.direct_cost_usd = deployment.direct_cost(
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
    )


async def first_payloads(
    chunks: AsyncIterator[bytes], decoder: SSEDecoder, translator: StreamTranslator
) -> list[bytes]:
    """Read until the translator has something to send (or the stream is over)."""
    async for chunk in chunks:
        payloads = [p for event in decoder.feed(chunk) for p in translator.feed(event)]
        if payloads:
            return payloads
    payloads = [p for event in decoder.flush() for p in translator.feed(event)]
    return payloads + translator.finish()


def shared_headers(run: Run, hit: bool) -> dict[str, str]:
    headers = run.admission.headers()
    if not hit:
        headers["x-switchboard-deduplicated"] = "true"
    return headers


async def replay(frames: list[bytes]) -> AsyncGenerator[bytes]:
    for item in frames:
        yield item


def stream_answer(
    translator: StreamTranslator, usage: Usage, deployment: DeploymentInfo, run: Run
) -> Stored | None:
    """A whole stream as the answer the cache and the flight's followers get, when it can be one."""
    if run.cache_key is None or translator.finish_reason in ("tool_calls", "function_call"):
        return None  # tool calls arrive in fragments the translators do not put together
    finish_reason = translator.finish_reason or "stop"
    body = cache.completion_body(
        translator.chunk_id,
        translator.created,
        deployment.model,
        translator.text,
        finish_reason,
        usage,
    )
    return Stored(
        body,
        deployment.provider,
        deployment.model,
        deployment.id,
        run.caller.request_id,
        usage,
        finish_reason,
        translator.text,
    )


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def stream_error_payload(error: ProviderError) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": f"The provider's stream was cut: {error.message}",
                "type": "upstream_error",
                "param": None,
                "code": error.code or "stream_cut",
            }
        }
    )


def stream_usage(translator: StreamTranslator, request: ChatRequest) -> tuple[Usage, bool]:
    if translator.usage is not None and translator.usage.completion_tokens:
        return translator.usage, False
    # A cut stream never sends its usage: count roughly (4 characters a token),
    # and mark the record as estimated.
    prompt = translator.usage.prompt_tokens if translator.usage else request.prompt_chars() // 4
    return Usage(prompt_tokens=prompt, completion_tokens=max(0, len(translator.text) // 4)), True


def usage_chunk(translator: StreamTranslator, usage: Usage) -> bytes:
    return orjson.dumps(
        {
            "id": translator.chunk_id,
            "object": "chat.completion.chunk",
            "created": translator.created,
            "model": translator.target.model,
            "choices": [],
            "usage": usage.as_openai(),
        }
    )
