"""Ranking a route's candidates for one request: its strategy, then the demotions.

Each route has a strategy (`Route.strategy`, in the routing table's `RoutePolicy`):

- ``ordered``: the chain's order (after the rules), as configured.
- ``cheapest``: the lowest estimated cost of this request on the deployment
  (its prompt, about 4 characters a token, and its ``max_tokens`` or 256
  output tokens, at the deployment's price or its plan's highest rate).
- ``fastest``: the lowest rolling latency (`routing.live`); a deployment not
  measured lately counts as the median of those that are, so it is tried.
- ``balanced``: the lowest weighted sum of, each scaled to 0..1 across the
  candidates, latency * 0.30, estimated cost * 0.30, error rate * 0.20,
  quality shortfall (1 - score/100) * 0.10 and load (in flight / cap) * 0.10.
  Budget pressure (the highest share spent of the budgets that apply) raises
  the cost weight up to threefold: * (1 + 2 * pressure).

Whatever the strategy, in this order of precedence:

1. a deployment whose breaker is open (and still cooling down) goes last;
   the engine's `_candidates` is what skips it;
2. a deployment at its concurrency cap goes after the rest: the request
   spills over to the next (and if it frees up meanwhile, it is still tried);
3. a deployment whose quality score is below the route's quality floor goes
   after those above it (no score: neutral, never demoted);
4. when an applicable budget is past its degrade point, or any is at least
   ``PRESSURE_CHEAPEST`` spent, price decides the order; this is the only place
   the degrade rule applies, so it never undoes 1-3 (the usage record's context
   names the budget: ``degraded_by``).

Ties keep the chain's order. Every candidate's entry in the explanation has its
rank, its score parts, the reason for its place and its estimated cost; it goes
to the usage record (``decision["ranking"]``) and the route preview.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.money import PER_MTOK, quantize
from routing import live
from routing.breaker import Reading, State
from routing.limits import ESTIMATED_OUTPUT_TOKENS, TOKENS_PER_MESSAGE
from routing.schema import ChatRequest
from routing.table import DeploymentInfo, Resolution, RoutePolicy

log = logging.getLogger(__name__)

STRATEGIES = ("ordered", "cheapest", "fastest", "balanced")
WEIGHTS = {"latency": 0.30, "cost": 0.30, "errors": 0.20, "quality": 0.10, "load": 0.10}
# Any budget that applies spent this far: cheapest first, as past a degrade point.
PRESSURE_CHEAPEST = 0.9


def estimated_cost(request: ChatRequest, deployment: DeploymentInfo) -> Decimal:
    """What this request is expected to cost on ``deployment`` (not its worst case)."""
    prompt = request.prompt_chars() // 4 + TOKENS_PER_MESSAGE * len(request.messages)
    output = request.max_output_tokens or ESTIMATED_OUTPUT_TOKENS
    if deployment.plan is not None:
        return quantize((prompt + output) * deployment.plan.highest_rate_per_mtok() / PER_MTOK)
    return deployment.cost(prompt, output)


def price_per_mtok(deployment: DeploymentInfo) -> Decimal:
    """A deployment's price for a million tokens each way: the order under budget pressure."""
    if deployment.plan is not None:
        return 2 * deployment.plan.highest_rate_per_mtok()
    return deployment.cost(1_000_000, 1_000_000)


@dataclass
class Candidate:
    deployment: DeploymentInfo
    position: int
    live: live.Live
    request: ChatRequest
    breaker_open: bool = False
    at_cap: bool = False
    below_floor: bool = False
    score: float = 0.0
    parts: dict[str, float] | None = None

    @functools.cached_property
    def cost(self) -> Decimal:
        """The request's estimated cost here. Worked out when asked (the cheapest and
        balanced strategies, the explanation): an ordered route's order needs none."""
        return estimated_cost(self.request, self.deployment)


def order(
    chain: tuple[DeploymentInfo, ...],
    policy: RoutePolicy,
    snapshot: live.Snapshot,
    readings: dict[int, Reading],
    request: ChatRequest,
    cooldown_seconds: float,
    now: float | None = None,
) -> Ranked:
    """The chain in the order to try it; `Ranked.explain` says why, when asked."""
    now = time.time() if now is None else now
    strategy = policy.strategy if policy.strategy in STRATEGIES else "ordered"
    candidates = []
    for position, deployment in enumerate(chain):
        numbers = snapshot.deployments.get(deployment.id, NOT_MEASURED)
        reading = readings.get(deployment.id)
        candidate = Candidate(deployment, position, numbers, request)
        candidate.breaker_open = (
            reading is not None
            and reading.state is State.OPEN
            and now - reading.opened_at < cooldown_seconds
        )
        cap = deployment.max_concurrency
        candidate.at_cap = bool(cap) and numbers.in_flight >= cap
        candidate.below_floor = (
            policy.quality_floor is not None
            and numbers.quality is not None
            and numbers.quality < policy.quality_floor
        )
        candidates.append(candidate)
    by_price = bool(snapshot.degraded_by) or snapshot.budget_pressure >= PRESSURE_CHEAPEST
    known = [c.live.latency_ms for c in candidates if c.live.latency_ms is not None]
    neutral_latency = statistics.median(known) if known else 0.0
    _score(candidates, strategy, neutral_latency, snapshot.budget_pressure)

    def primary(c: Candidate) -> tuple[Any, ...]:
        if by_price:
            return (price_per_mtok(c.deployment),)
        if strategy == "cheapest":
            return (c.cost,)
        if strategy == "fastest":
            return (c.live.latency_ms if c.live.latency_ms is not None else neutral_latency,)
        if strategy == "balanced":
            return (c.score,)
        return ()

    ordered = sorted(
        candidates,
        key=lambda c: (c.breaker_open, c.at_cap, c.below_floor, *primary(c), c.position),
    )
    return Ranked(ordered, strategy, policy, snapshot, by_price)


NOT_MEASURED = live.Live()


@dataclass
class Ranked:
    """A chain in the order to try it, and what decided it. The explanation is built
    apart (`explain`): the engine writes it down while the provider works (perf)."""

    candidates: list[Candidate]
    strategy: str
    policy: RoutePolicy
    snapshot: live.Snapshot
    by_price: bool
    live_read: bool | None = None  # whether the live numbers were read (`finish`)

    @property
    def chain(self) -> tuple[DeploymentInfo, ...]:
        return tuple(c.deployment for c in self.candidates)

    def explain(self) -> dict[str, Any]:
        """Why each candidate has its place: the usage record's ``decision["ranking"]``."""
        strategy, snapshot = self.strategy, self.snapshot
        entries = []
        for rank_, candidate in enumerate(self.candidates, start=1):
            entries.append(
                {
                    "rank": rank_,
                    "deployment": candidate.deployment.label,
                    "deployment_id": candidate.deployment.id,
                    "chain_position": candidate.position + 1,
                    "estimated_cost_usd": f"{candidate.cost:f}",
                    "live": candidate.live.as_dict(),
                    "score": round(candidate.score, 4) if strategy == "balanced" else None,
                    "parts": candidate.parts if strategy == "balanced" else None,
                    "reason": _reason(candidate, strategy, self.policy, snapshot, self.by_price),
                }
            )
        explanation: dict[str, Any] = {
            "strategy": strategy,
            "quality_floor": self.policy.quality_floor,
            "candidates": entries,
        }
        if snapshot.pressing_budget or snapshot.degraded_by:
            explanation["budget"] = {
                "label": snapshot.pressing_budget,
                "spent_share": round(snapshot.budget_pressure, 3),
                "cheapest_first": self.by_price,
            }
            if snapshot.degraded_by:
                explanation["budget"]["degraded_by"] = snapshot.degraded_by
        if self.live_read is not None:
            explanation["live_read"] = self.live_read
        return explanation


def _score(
    candidates: list[Candidate], strategy: str, neutral_latency: float, pressure: float
) -> None:
    """Balanced: each part scaled to 0..1 across the candidates, weighted, summed."""
    if strategy != "balanced" or not candidates:
        return
    latencies = [
        c.live.latency_ms if c.live.latency_ms is not None else neutral_latency for c in candidates
    ]
    top_latency = max(latencies) or 1.0
    top_cost = max(c.cost for c in candidates) or Decimal(1)
    known_quality = [float(c.live.quality) for c in candidates if c.live.quality is not None]
    neutral_quality = statistics.mean(known_quality) if known_quality else 100.0
    cost_weight = WEIGHTS["cost"] * (1 + 2 * pressure)
    for candidate, latency in zip(candidates, latencies, strict=True):
        cap = candidate.deployment.max_concurrency
        quality = (
            float(candidate.live.quality) if candidate.live.quality is not None else neutral_quality
        )
        parts = {
            "latency": WEIGHTS["latency"] * latency / top_latency,
            "cost": cost_weight * float(candidate.cost / top_cost),
            "errors": WEIGHTS["errors"] * candidate.live.error_rate,
            "quality": WEIGHTS["quality"] * max(0.0, 1 - quality / 100),
            "load": WEIGHTS["load"] * (min(1.0, candidate.live.in_flight / cap) if cap else 0.0),
        }
        candidate.parts = {name: round(value, 4) for name, value in parts.items()}
        candidate.score = sum(parts.values())


def _reason(
    c: Candidate, strategy: str, policy: RoutePolicy, snapshot: live.Snapshot, by_price: bool
) -> str:
    if c.breaker_open:
        return "breaker open: tried last, only if every other candidate fails"
    if c.at_cap:
        return (
            f"at its concurrency cap ({c.live.in_flight}/{c.deployment.max_concurrency} "
            "in flight): spills over to the next"
        )
    if c.below_floor:
        return f"quality {c.live.quality} below the route's floor of {policy.quality_floor}"
    if by_price:
        budget = snapshot.degraded_by or snapshot.pressing_budget
        return (
            f"budget pressure ({budget}): cheapest first, "
            f"${price_per_mtok(c.deployment):f} per million tokens each way"
        )
    if strategy == "cheapest":
        return f"estimated ${c.cost:f} for this request"
    if strategy == "fastest":
        if c.live.latency_ms is None:
            return "no latency measured lately: counted as the route's median"
        return f"rolling latency {round(c.live.latency_ms)} ms"
    if strategy == "balanced":
        assert c.parts is not None
        biggest = max(c.parts, key=lambda name: c.parts[name] if c.parts else 0)
        return f"score {c.score:.3f} (lower is better; most from {biggest})"
    return f"position {c.position + 1} in the route"


@dataclass(frozen=True)
class Plan:
    """What ranking a request needs: its route's policy, and whether the order depends on
    live numbers (then `read_args` reads them)."""

    resolution: Resolution
    policy: RoutePolicy
    budgets: list[tuple[str, Decimal, str, int | None]]
    reads_live: bool

    def read_args(self) -> list[Any]:
        """The live read's EVALSHA arguments, as of now. Built only when a request reads
        (perf: most are ranked from `Readings`)."""
        return live.read_args(self.resolution.chain, self.budgets)

    @property
    def read_key(self) -> tuple[Any, ...]:
        """What the read touches (`live.read_args`' keys): the chain's deployments with
        their credentials (a deployment's slots are counted per credential), and the
        budgets' periods."""
        chain = tuple((d.id, d.credential_id) for d in self.resolution.chain)
        return (chain, *(b[0] for b in self.budgets))


def plan(table: Any, resolution: Resolution, key_name: str, started_at: datetime) -> Plan:
    policy = table.policies.get(resolution.route, RoutePolicy())
    budgets = [
        (b.key(started_at), b.amount_usd, b.label, b.degrade_at_pct)
        for b in table.budgets
        if b.applies_to(key_name, resolution.route)
    ]
    # An ordered route without a floor, caps or budgets ranks the same without them:
    # no Redis read.
    reads_live = bool(
        policy.strategy != "ordered"
        or policy.quality_floor is not None
        or budgets
        or any(d.max_concurrency for d in resolution.chain)
    )
    return Plan(resolution, policy, budgets, reads_live)


async def finish(
    engine: Any, planned: Plan, snapshot: live.Snapshot | None, request: ChatRequest
) -> tuple[Resolution, Ranked]:
    """Rank with the live numbers (None when the plan has no read) and the breakers
    (cached for a moment, read in one)."""
    chain = planned.resolution.chain
    readings = await engine.breakers.read([d.id for d in chain])
    ranked = order(
        chain,
        planned.policy,
        snapshot or NO_NUMBERS,
        readings,
        request,
        engine.breakers.policy.cooldown_seconds,
    )
    ranked.live_read = snapshot is not None
    return Resolution(planned.resolution.route, ranked.chain), ranked


NO_NUMBERS = live.Snapshot({})


async def read(engine: Any, planned: Plan) -> live.Snapshot | None:
    """The live numbers, in a round trip of its own (None when the plan has none). A keyed
    request sends ``planned.read_args()`` with its admission instead (`Readings.put`)."""
    if not planned.reads_live:
        return None
    reply = await engine.breakers.evalsha(*planned.read_args())
    return live.parse(reply, planned.resolution.chain, planned.budgets)


# A reading older than this is never served: read again, in the request's own round trip.
STALE_LIMIT = 5.0


class Readings:
    """The live read's latest replies, kept for a moment (``seconds``, the breakers' read
    cache): a request admitted from an allowance makes no round trip before its provider
    call (routing.allowances), so its ranking reads these. A stale reply is still used
    while a fresh one is read in the background: the ranking only orders the candidates.
    A chain with a concurrency cap is read afresh every time, so that a deployment at its
    cap goes last at once (its own admission is a round trip anyway).
    """

    def __init__(self, evalsha: Any, seconds: float = 0.5) -> None:
        self.evalsha = evalsha
        self.seconds = seconds
        # `Plan.read_key` -> (when read, monotonic; the reply, parsed)
        self._replies: dict[tuple[Any, ...], tuple[float, live.Snapshot]] = {}
        self._reading: set[tuple[Any, ...]] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # refreshes under way, kept alive

    async def get(self, planned: Plan) -> live.Snapshot | None:
        if not planned.reads_live:
            return None
        key = planned.read_key
        found = self._replies.get(key)
        age = time.monotonic() - found[0] if found is not None else math.inf
        if age > STALE_LIMIT or any(d.max_concurrency for d in planned.resolution.chain):
            return self._keep(key, planned, await self.evalsha(*planned.read_args()))
        if age > self.seconds and key not in self._reading:
            self._reading.add(key)
            task = asyncio.get_running_loop().create_task(self._refresh(key, planned))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        assert found is not None
        return found[1]

    def put(self, planned: Plan, reply: Any) -> live.Snapshot | None:
        """A reply read with an exact admission, parsed: fresh, for the requests after it."""
        if not planned.reads_live or reply is None:
            return None
        return self._keep(planned.read_key, planned, reply)

    def _keep(self, key: tuple[Any, ...], planned: Plan, reply: Any) -> live.Snapshot:
        snapshot = live.parse(reply, planned.resolution.chain, planned.budgets)
        self._replies[key] = (time.monotonic(), snapshot)
        return snapshot

    async def _refresh(self, key: tuple[Any, ...], planned: Plan) -> None:
        try:
            self._keep(key, planned, await self.evalsha(*planned.read_args()))
        except Exception:  # the stale reply serves until the next try
            log.warning("could not refresh the live numbers", exc_info=True)
        finally:
            self._reading.discard(key)

    def forget(self) -> None:
        self._replies, self._reading = {}, set()
