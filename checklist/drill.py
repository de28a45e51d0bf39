"""The fallback drill: break the staging providers on purpose and watch the gateway cope.

The drill runs against the provider simulator only (routing/simulator): it injects
faults through the simulator's /_control/faults API, sends requests in-process with
`EnhancedHybridAIClient(environment=...)`, and checks that each was answered through
the provider the plan expects. It refuses to run when the environment's providers
are not served by one simulator: faults cannot be injected into real providers.

Faults apply to everything the simulator serves while a scenario runs, and the
breakers it trips are the deployments' shared breakers, so a drill is for a staging
or demo installation whose providers are all simulated. Each scenario starts with
the chain's breakers closed and no faults; at the end the breakers are closed and
the faults that were set before the drill (the demo's outage) are set again.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from checklist.evidence import DRILL_METADATA_KEY, FALLBACK_CHAIN
from project.errors import ApiError
from project.redis import sync_client
from routing.breaker import KEY as BREAKER_KEY
from routing.breaker import State
from routing.client import EnhancedHybridAIClient, close_engine, forget_cached_state
from routing.models import Deployment, ProviderCredential, Route
from routing.schema import validate_chat_body

STORM_REQUESTS = 20
MESSAGES = [{"role": "user", "content": "Fallback drill: summarise 'we ship on Friday'."}]


class DrillError(Exception):
    """The drill could not run (no suitable route, no simulator, breakers already open)."""


@dataclass
class Scenario:
    name: str
    faults: list[dict[str, Any]]
    expected: str
    requests: int = 1


@dataclass
class Outcome:
    name: str
    faults: list[dict[str, Any]]
    expected: str
    answered_by: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # of the first request
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scenarios(chain: list[str], timeout_ms: int) -> list[Scenario]:
    """Each provider failing in turn, all but one failing, a timeout, a 429 storm."""
    down = {"mode": "error", "status": 503}
    found = [
        Scenario(
            f"{name} fails",
            [{"provider": name, **down}],
            next(other for other in chain if other != name),
        )
        for name in chain
    ]
    found += [
        Scenario(
            f"all but {name} fail",
            [{"provider": other, **down} for other in chain if other != name],
            name,
        )
        for name in chain
    ]
    first, second = chain[0], chain[1]
    found.append(
        Scenario(
            f"{first} times out",
            [{"provider": first, "mode": "timeout", "delay_ms": timeout_ms}],
            second,
        )
    )
    found.append(
        Scenario(
            f"429 storm on {first} ({STORM_REQUESTS} requests at once)",
            [{"provider": first, "mode": "rate_limit", "retry_after": 1}],
            second,
            requests=STORM_REQUESTS,
        )
    )
    return found


class Simulator:
    """The simulator's control API. Plain urllib: this is test tooling on a local
    server, not provider traffic, which routing.http alone carries."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        with self._opener.open(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def reachable(self) -> bool:
        try:
            self.call("GET", "/_control/faults")
        except (OSError, ValueError):
            return False
        return True

    def clear(self) -> None:
        self.call("DELETE", "/_control/faults")

    def faults(self) -> list[dict[str, Any]]:
        """The faults in force, as specs that add them again."""
        listed = self.call("GET", "/_control/faults").get("faults", [])
        return [{k: v for k, v in f.items() if k != "id" and v is not None} for f in listed]

    def fault(self, spec: dict[str, Any]) -> None:
        self.call("POST", "/_control/faults", spec)


@dataclass
class Plan:
    route: Route
    deployments: list[Deployment]
    simulator: Simulator

    @property
    def chain(self) -> list[str]:
        return [d.provider.name for d in self.deployments]


def plans(environment: str, simulator_url: str = "") -> list[Plan]:
    """The routes that can be drilled: enabled, open to ``environment``, starting with the
    plan's four providers in order, and served by the provider simulator."""
    found = []
    for route in Route.objects.filter(enabled=True).prefetch_related("steps__deployment__provider"):
        if environment not in (route.environments or []):
            continue
        deployments = [
            s.deployment
            for s in route.steps.all()
            if s.deployment.enabled and s.deployment.provider.enabled
        ][: len(FALLBACK_CHAIN)]
        if [d.provider.name for d in deployments] != list(FALLBACK_CHAIN):
            continue
        origins = {_simulated_origin(d) for d in deployments}
        url = simulator_url or (next(iter(origins)) if len(origins) == 1 else None)
        if url:
            found.append(Plan(route, deployments, Simulator(url)))
    if not found:
        raise DrillError(
            f"no enabled {environment} route starts {' → '.join(FALLBACK_CHAIN)} with every "
            "provider served by the provider simulator; a drill injects faults, so it runs "
            "only against the simulator (or pass --simulator URL)"
        )
    if not found[0].simulator.reachable():
        raise DrillError(f"no provider simulator answers at {found[0].simulator.url}")
    if not ProviderCredential.objects.enabled().filter(environment=environment).exists():
        raise DrillError(f"no provider has an enabled {environment} credential")
    return found


def _simulated_origin(deployment: Deployment) -> str | None:
    """The simulator's base URL if this provider's URL has its layout (/<provider>/...)."""
    parts = urlsplit(deployment.provider.base_url)
    if parts.path.split("/")[1:2] != [deployment.provider.name]:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def reset_breakers(deployments: list[Deployment]) -> None:
    sync_client().delete(*(BREAKER_KEY.format(d.pk) for d in deployments))
    forget_cached_state()


def open_breakers(deployments: list[Deployment]) -> list[str]:
    states = [sync_client().hget(BREAKER_KEY.format(d.pk), "state") for d in deployments]
    return [
        d.provider.name
        for d, raw in zip(deployments, states, strict=True)
        if raw is not None and (raw.decode() if isinstance(raw, bytes) else raw) != State.CLOSED
    ]


def run(
    environment: str = "staging",
    simulator_url: str = "",
    progress: Callable[[Outcome], None] | None = None,
) -> tuple[Plan, list[Outcome]]:
    """Run every scenario; raises DrillError if the drill cannot run at all.

    The drilled route is the first candidate that answers through its first provider
    with nothing broken (the baseline, the drill's first scenario): a route whose first
    hop is down on purpose, like the demo's fallback-demo, proves nothing about fallback.
    """
    candidates = plans(environment, simulator_url)
    for candidate in candidates:
        already_open = open_breakers(candidate.deployments)
        if already_open:
            raise DrillError(
                f"breakers already open for {', '.join(already_open)}: "
                "heal the chain before a drill"
            )
    chosen, baseline = candidates[0], None
    # Faults set before the drill (the demo's outage) are lifted while it runs, then restored.
    simulators = {c.simulator.url: c.simulator for c in candidates}
    before = {url: simulator.faults() for url, simulator in simulators.items()}
    try:
        for candidate in candidates:
            # With the simulator as found: the route must be healthy before it is broken.
            outcome = _run_scenario(
                candidate,
                Scenario("nothing fails", [], candidate.chain[0]),
                environment,
                clear=False,
            )
            if baseline is None or outcome.ok:
                chosen, baseline = candidate, outcome
            if outcome.ok:
                break
        assert baseline is not None
        if progress is not None:
            progress(baseline)
        outcomes = [baseline]
        first = chosen.deployments[0].provider
        # Longer than the gateway will wait, so the provider really times out.
        timeout_ms = int((first.read_timeout + first.connect_timeout + 1) * 1000)
        for scenario in scenarios(chosen.chain, timeout_ms):
            outcome = _run_scenario(chosen, scenario, environment)
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        for url, simulator in simulators.items():
            simulator.clear()
            for spec in before[url]:
                simulator.fault(spec)
        for candidate in candidates:
            reset_breakers(candidate.deployments)
    return chosen, outcomes


def _run_scenario(
    drill_plan: Plan, scenario: Scenario, environment: str, clear: bool = True
) -> Outcome:
    simulator = drill_plan.simulator
    if clear:
        simulator.clear()
    reset_breakers(drill_plan.deployments)
    for spec in scenario.faults:
        simulator.fault(spec)
    outcome = Outcome(scenario.name, scenario.faults, scenario.expected)
    started = time.monotonic()
    answers = asyncio.run(_ask(drill_plan.route.name, scenario, environment))
    outcome.seconds = round(time.monotonic() - started, 2)
    problems = []
    for answer in answers:
        if isinstance(answer, ApiError):
            outcome.answered_by.append("")
            problems.append(f"{answer.status} {answer.code}")
        else:
            outcome.answered_by.append(answer.provider)
    first = answers[0]
    if not isinstance(first, ApiError):
        outcome.attempts = [f"{a.provider}: {a.outcome}" for a in first.attempts]
    wrong = [p for p in outcome.answered_by if p != scenario.expected]
    outcome.ok = not wrong
    if wrong:
        others = sorted({p or "nobody" for p in wrong})
        outcome.detail = (
            f"{len(wrong)} of {len(answers)} answered by {', '.join(others)}, "
            f"expected {scenario.expected}"
        ) + (f" ({'; '.join(sorted(set(problems)))})" if problems else "")
    return outcome


async def _ask(route: str, scenario: Scenario, environment: str) -> list[Any]:
    client = EnhancedHybridAIClient(environment=environment)
    # Never from the response cache, and each request its own (single-flight would merge
    # identical ones in flight): every request must reach the providers.
    metadata = {DRILL_METADATA_KEY: scenario.name, "cache": "false"}

    async def one(n: int) -> Any:
        text = f"{MESSAGES[0]['content']} ({scenario.name}, request {n + 1}, {time.time()})"
        body = {"model": route, "messages": [{"role": "user", "content": text}]}
        try:
            return await client.run(
                validate_chat_body({**body, "metadata": metadata, "stream": False})
            )
        except ApiError as exc:
            return exc

    try:
        return list(await asyncio.gather(*(one(n) for n in range(scenario.requests))))
    finally:
        await close_engine()
