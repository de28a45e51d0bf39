"""What the routing table holds of running experiments and rollouts, per environment.

Built with the table (`routing.table.build_table`), in a few queries; the request
path reads it from memory (`routing.assignment.choose`). A rollout or experiment
saved anywhere bumps the config version (routing/signals.py), so every gateway
process has the change within ``TABLE_CHECK_SECONDS``: a rollback reaches them all
within about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.table import DeploymentInfo, RouteSet


@dataclass(frozen=True)
class ArmInfo:
    name: str
    weight: int
    kind: str
    deployment: DeploymentInfo | None = None  # deployment kind: tried first
    route_chain: tuple[DeploymentInfo, ...] | None = None  # route kind: this chain instead
    parameters: dict[str, Any] = field(default_factory=dict)

    def chain(self, base: tuple[DeploymentInfo, ...]) -> tuple[DeploymentInfo, ...]:
        """The arm's chain, given the route's (after the rollout)."""
        if self.deployment is not None:
            return (self.deployment, *(d for d in base if d.id != self.deployment.id))
        if self.route_chain:
            return self.route_chain
        return base


@dataclass(frozen=True)
class ExperimentInfo:
    id: int
    name: str
    route: str
    salt: str
    arms: tuple[ArmInfo, ...]


@dataclass(frozen=True)
class PromotedParameters:
    """A promoted parameters variant: set on every request of the route from now on."""

    name: str
    arm: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class RolloutInfo:
    id: int
    route: str
    percent: int
    salt: str
    legacy: tuple[DeploymentInfo, ...]
    new: tuple[DeploymentInfo, ...]


@dataclass(frozen=True)
class ArmSet:
    rollouts: dict[str, RolloutInfo] = field(default_factory=dict)
    experiments: dict[str, ExperimentInfo] = field(default_factory=dict)
    parameters: dict[str, PromotedParameters] = field(default_factory=dict)


def build(route_sets: dict[str, RouteSet]) -> dict[str, ArmSet]:
    """Every environment's running rollouts and experiments, resolved to its deployments."""
    from routing.models import Experiment, Rollout

    rollouts = list(
        Rollout.objects.applied()
        .select_related("route", "legacy_route")
        .prefetch_related("legacy_route__steps__deployment__provider")
    )
    experiments = list(
        Experiment.objects.filter(
            status__in=[Experiment.Status.RUNNING, Experiment.Status.PROMOTED]
        )
        .select_related("route", "winner")
        .prefetch_related("variants__deployment__provider", "variants__target_route")
    )
    result: dict[str, ArmSet] = {}
    for environment, routes in route_sets.items():
        arm_set = ArmSet()
        for rollout in rollouts:
            arm_set.rollouts[rollout.route.name] = _rollout(rollout, routes)
        for experiment in experiments:
            if experiment.status == Experiment.Status.RUNNING:
                arm_set.experiments[experiment.route.name] = _experiment(experiment, routes)
            elif experiment.winner is not None and experiment.winner.parameters:
                arm_set.parameters[experiment.route.name] = PromotedParameters(
                    experiment.name, experiment.winner.name, dict(experiment.winner.parameters)
                )
        result[environment] = arm_set
    return result


def _chain(routes: RouteSet, labels: list[str]) -> tuple[DeploymentInfo, ...]:
    """The labels' deployments reachable in this environment, in order."""
    return tuple(routes.models[label][0] for label in labels if routes.models.get(label))


def _rollout(rollout: Any, routes: RouteSet) -> RolloutInfo:
    if rollout.legacy_route_id is not None:
        legacy = routes.routes.get(rollout.legacy_route.name, ())
    else:
        legacy = _chain(routes, list(rollout.legacy_chain))
    if rollout.new_chain:
        new = _chain(routes, list(rollout.new_chain))
    else:
        new = routes.routes.get(rollout.route.name, ())
    percent = {"completed": 100, "rolled_back": 0}.get(rollout.status, rollout.percent)
    return RolloutInfo(rollout.id, rollout.route.name, percent, rollout.salt, legacy, new)


def _experiment(experiment: Any, routes: RouteSet) -> ExperimentInfo:
    arms = []
    for variant in experiment.variants.all():
        deployment = None
        if variant.deployment_id is not None:
            found = routes.models.get(str(variant.deployment))
            deployment = found[0] if found else None
        route_chain = None
        if variant.target_route_id is not None:
            route_chain = routes.routes.get(variant.target_route.name)
        arms.append(
            ArmInfo(
                variant.name,
                variant.weight,
                variant.kind,
                deployment,
                route_chain,
                dict(variant.parameters or {}),
            )
        )
    return ExperimentInfo(
        experiment.id, experiment.name, experiment.route.name, experiment.salt, tuple(arms)
    )
