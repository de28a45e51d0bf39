"""The in-memory routing table: everything the request path needs to know.

Built from the database in one pass, kept per process, and rebuilt only when
the config version in Redis changes (every save of a routing model bumps it).
A warm request therefore reads no configuration from the database; it asks
Redis for the version at most once per ``TABLE_CHECK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from redis import Redis as SyncRedis

from billing.budgets import BudgetInfo
from billing.money import token_cost
from billing.plans import PlanInfo
from project.resp import AsyncRedis as Redis
from project.secrets import SecretUnreadable
from routing.experiments import snapshot
from routing.experiments.snapshot import ArmSet
from routing.quality.config import QualityConfig
from routing.rules import RuleInfo

if TYPE_CHECKING:
    from routing.models import ClientKey

log = logging.getLogger(__name__)

VERSION_KEY = "sb:config:version"


@dataclass(frozen=True)
class DeploymentInfo:
    id: int
    provider: str
    protocol: str
    base_url: str
    model: str
    api_key: str = field(repr=False)
    vendor: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal | None
    context_window: int
    max_output_tokens: int | None
    connect_timeout: float
    read_timeout: float
    # A subscription plan that prices every call to this provider, if one is enabled.
    plan: PlanInfo | None = None
    # Admin price overrides, latest first: (effective from, input, output, cached input).
    overrides: tuple[tuple[float, Decimal, Decimal, Decimal | None], ...] = ()
    # The original vendor's list prices (the savings baseline); None when unknown.
    direct_input_usd_per_mtok: Decimal | None = None
    direct_output_usd_per_mtok: Decimal | None = None
    direct_cached_input_usd_per_mtok: Decimal | None = None
    # The ProviderCredential whose key this copy sends (one copy per environment).
    credential_id: int | None = None
    # Compliance: may serve healthcare (HIPAA BAA signed); where data is processed.
    baa_signed: bool = False
    data_region: str = "us"
    # Our own limits under the provider's quota (routing.limits); 0: none.
    rpm: int = 0
    tpm: int = 0
    # Requests in flight at once (routing.live); 0: no cap.
    max_concurrency: int = 0

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"

    def direct_cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> Decimal | None:
        """What the same tokens would cost at the model's vendor's list price."""
        if self.direct_input_usd_per_mtok is None or self.direct_output_usd_per_mtok is None:
            return None
        return token_cost(
            prompt_tokens,
            completion_tokens,
            self.direct_input_usd_per_mtok,
            self.direct_output_usd_per_mtok,
            cached_tokens,
            self.direct_cached_input_usd_per_mtok,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        input_price, output_price, cached_price = self.prices_at(time.time())
        return token_cost(
            prompt_tokens, completion_tokens, input_price, output_price, cached_tokens, cached_price
        )

    def prices_at(self, when: float) -> tuple[Decimal, Decimal, Decimal | None]:
        """The price in effect at ``when`` (epoch seconds): the latest override that has begun.

        Overrides are in the table with their dates, so one that begins later takes
        effect on time without the table being rebuilt.
        """
        for effective_from, input_price, output_price, cached_price in self.overrides:
            if effective_from <= when:
                return input_price, output_price, cached_price
        return self.input_usd_per_mtok, self.output_usd_per_mtok, self.cached_input_usd_per_mtok


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    scopes: frozenset[str]
    environment: str
    expires_at: float | None = None  # epoch seconds
    allowed_models: frozenset[str] = frozenset()  # empty: every route and model
    # Rate limits (routing.limits); 0: none.
    rpm: int = 0
    tpm: int = 0
    max_concurrent: int = 0
    burst: int = 0
    # The key's organisation (routing.models.Organisation): its industry feeds the context
    # and the compliance policy; its languages restrict language detection (empty: the
    # SWITCHBOARD_LANGUAGES setting).
    organisation: str = ""
    industry: str = ""
    languages: tuple[str, ...] = ()

    def may_use(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


@dataclass(frozen=True)
class Resolution:
    route: str  # the route name, or the model name asked for when it is not a route
    chain: tuple[DeploymentInfo, ...]


@dataclass(frozen=True)
class RoutePolicy:
    """How a route ranks its candidates (routing.selection)."""

    strategy: str = "ordered"
    quality_floor: int | None = None
    # An answer slower than this is scored down by the quality rule "slow" (routing.quality).
    latency_target_ms: int | None = None


@dataclass(frozen=True)
class RouteSet:
    """What the keys of one environment can reach, with that environment's credentials."""

    routes: dict[str, tuple[DeploymentInfo, ...]]
    models: dict[str, tuple[DeploymentInfo, ...]]

    def resolve(self, name: str) -> Resolution | None:
        """A route name, a "provider/model" label, or a bare model name."""
        chain = self.routes.get(name)
        if chain is not None:
            return Resolution(name, chain)
        chain = self.models.get(name)
        if chain:
            return Resolution(name, chain)
        return None

    def model_ids(self) -> list[str]:
        return sorted(self.routes) + sorted(self.models)


EMPTY = RouteSet({}, {})


@dataclass(frozen=True)
class RoutingTable:
    version: int
    environments: dict[str, RouteSet]
    keys: dict[str, KeyInfo]
    budgets: tuple[BudgetInfo, ...] = ()
    # Running rollouts and experiments, per environment (routing.assignment applies them).
    arms: dict[str, ArmSet] = field(default_factory=dict)
    quality: QualityConfig = field(default_factory=QualityConfig)  # the quality rules' weights
    # Route name -> its strategy and quality floor; routing rules, by priority.
    policies: dict[str, RoutePolicy] = field(default_factory=dict)
    rules: tuple[RuleInfo, ...] = ()

    def resolve(self, name: str, environment: str) -> Resolution | None:
        return self.environments.get(environment, EMPTY).resolve(name)

    def latency_target(self, route: str) -> int | None:
        policy = self.policies.get(route)
        return policy.latency_target_ms if policy is not None else None

    def model_ids(self, environment: str) -> list[str]:
        return self.environments.get(environment, EMPTY).model_ids()


def build_table(version: int) -> RoutingTable:
    """Read the whole configuration (a handful of queries) into a RoutingTable."""
    from django.db import connection

    try:
        return _build_table(version)
    finally:
        # Runs in a pool thread outside any request cycle, so nothing else
        # would ever close this thread's connection (unless a caller's
        # transaction is using it).
        if not connection.in_atomic_block:
            connection.close()


def _build_table(version: int) -> RoutingTable:
    from billing.models import Budget
    from routing.models import (
        ClientKey,
        Deployment,
        Environment,
        ProviderCredential,
        Route,
        RoutingRule,
    )
    from routing.quality import config as quality_config

    ordered = list(
        Deployment.objects.enabled()
        .select_related("provider", "provider__plan")
        .prefetch_related("price_overrides")
        .order_by("provider__priority", "provider__name", "name")
    )
    # The newest enabled credential of each (provider, environment) is the one used.
    credentials: dict[tuple[int, str], tuple[int, str]] = {}
    for row in ProviderCredential.objects.enabled().order_by("rotated_at", "id"):
        try:
            secret = row.secret()  # decrypted once here, not per deployment
        except SecretUnreadable:
            # One bad row must not take the gateway down with it; the key audit lists it.
            log.error("credential %s of %s cannot be decrypted; skipped", row.id, row.provider_id)
            continue
        credentials[(row.provider_id, row.environment)] = (row.id, secret)
    route_rows = list(Route.objects.filter(enabled=True).prefetch_related("steps"))
    environments = {}
    for environment in Environment.values:
        deployments = {}
        for deployment in ordered:
            found = credentials.get((deployment.provider_id, environment))
            if found is not None:  # no key for this environment: not reachable from it
                deployments[deployment.id] = _info(deployment, found)
        environments[environment] = _route_set(
            deployments, [r for r in route_rows if environment in r.environments]
        )
    keys = {
        key.key_hash: KeyInfo(
            key.id,
            key.name,
            frozenset(key.scopes),
            key.environment,
            key.expires_at.timestamp() if key.expires_at else None,
            frozenset(key.allowed_models),
            rpm=key.rpm or 0,
            tpm=key.tpm or 0,
            max_concurrent=key.max_concurrent or 0,
            burst=key.burst or 0,
            **_organisation(key),
        )
        for key in ClientKey.objects.active().select_related("organisation")
    }
    return RoutingTable(
        version=version,
        environments=environments,
        keys=keys,
        budgets=tuple(b.info() for b in Budget.objects.all()),
        arms=snapshot.build(environments),
        quality=quality_config.load(),
        policies={
            r.name: RoutePolicy(r.strategy, r.quality_floor, r.latency_target_ms or None)
            for r in route_rows
        },
        rules=tuple(RuleInfo.of(r) for r in RoutingRule.objects.filter(enabled=True)),
    )


def _organisation(key: ClientKey) -> dict[str, Any]:
    organisation = key.organisation
    if organisation is None:
        return {}
    return {
        "organisation": organisation.name,
        "industry": organisation.industry,
        "languages": tuple(organisation.languages),
    }


def _route_set(deployments: dict[int, DeploymentInfo], route_rows: list[Any]) -> RouteSet:
    routes: dict[str, tuple[DeploymentInfo, ...]] = {}
    for route in route_rows:
        routes[route.name] = tuple(
            deployments[step.deployment_id]
            for step in sorted(route.steps.all(), key=lambda s: s.position)
            if step.deployment_id in deployments
        )
    models: dict[str, list[DeploymentInfo]] = {}
    # Deployments come ordered by provider priority, so a bare model name tries
    # the preferred provider first (AIMLAPI before the direct vendors).
    for info in deployments.values():
        models.setdefault(info.model, []).append(info)
        models[info.label] = [info]
    return RouteSet(routes, {name: tuple(chain) for name, chain in models.items()})


def _info(deployment: Any, credential: tuple[int, str]) -> DeploymentInfo:
    provider = deployment.provider
    credential_id, api_key = credential
    return DeploymentInfo(
        id=deployment.id,
        provider=provider.name,
        protocol=provider.protocol,
        base_url=provider.base_url.rstrip("/"),
        model=deployment.name,
        api_key=api_key,
        credential_id=credential_id,
        baa_signed=provider.baa_signed,
        data_region=provider.data_region,
        rpm=deployment.rpm or 0,
        tpm=deployment.tpm or 0,
        max_concurrency=deployment.max_concurrency or 0,
        vendor=provider.vendor,
        input_usd_per_mtok=deployment.input_usd_per_mtok,
        output_usd_per_mtok=deployment.output_usd_per_mtok,
        cached_input_usd_per_mtok=deployment.cached_input_usd_per_mtok,
        context_window=deployment.context_window,
        max_output_tokens=deployment.max_output_tokens,
        connect_timeout=provider.connect_timeout,
        read_timeout=provider.read_timeout,
        plan=_plan(provider),
        direct_input_usd_per_mtok=deployment.direct_input_usd_per_mtok,
        direct_output_usd_per_mtok=deployment.direct_output_usd_per_mtok,
        direct_cached_input_usd_per_mtok=deployment.direct_cached_input_usd_per_mtok,
        overrides=tuple(
            (
                o.effective_from.timestamp(),
                o.input_usd_per_mtok,
                o.output_usd_per_mtok,
                o.cached_input_usd_per_mtok,
            )
            for o in deployment.price_overrides.all()  # newest first (Meta.ordering)
        ),
    )


def _plan(provider: Any) -> PlanInfo | None:
    plan = getattr(provider, "plan", None)  # the reverse one-to-one raises when absent
    return plan.info() if plan is not None and plan.enabled else None


def bump_version(redis: SyncRedis) -> int:
    return int(redis.incr(VERSION_KEY))  # type: ignore[arg-type]


class TableCache:
    """One process's copy of the table, refreshed when Redis says it is stale."""

    def __init__(self, check_seconds: float) -> None:
        self.check_seconds = check_seconds
        self._table: RoutingTable | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, redis: Redis) -> RoutingTable:
        table = self._table
        now = time.monotonic()
        if table is not None and now - self._checked_at < self.check_seconds:
            return table
        raw = await redis.get(VERSION_KEY)
        version = int(raw or 0)
        self._checked_at = now
        if table is not None and table.version == version:
            return table
        async with self._lock:
            if self._table is None or self._table.version != version:
                self._table = await sync_to_async(build_table, thread_sensitive=False)(version)
        return self._table

    @property
    def current(self) -> RoutingTable | None:
        """The table as last loaded, without asking Redis whether it is stale."""
        return self._table

    def invalidate(self) -> None:
        self._table = None
