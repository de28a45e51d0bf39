"""The `rollouts:` and `experiments:` sections of the configuration file.

    rollouts:
      summary:                       # the route (use case) being moved
        legacy: [openai/gpt-4o-mini, google/gemini-2.0-flash]   # or legacy_route: a route
        new: [aimlapi/gpt-4o-mini, openai/gpt-4o-mini]          # optional: the route's chain
        phases: [0, 25, 50, 100]
        status: running              # draft (default) or running, when it is created
        percent: 25                  # where a new one starts (a phase)
        thresholds: {availability_pct: "99", latency_factor: "2", spend_pct: "150",
                     quality: "80", min_requests: 20}
    experiments:
      summary-models:
        route: summary
        metric: latency              # latency, cost, error_rate, quality, satisfaction
        status: draft                # or running, when it is created
        variants:
          - {name: aimlapi, weight: 50, deployment: aimlapi/gpt-4o-mini}
          - {name: openai, weight: 50, deployment: openai/gpt-4o-mini}
          # {name: cheap, weight: 50, route: summary-cheap}
          # {name: short, weight: 50, parameters: {max_tokens: 200}}

A rollout's percentage and status and an experiment's status move only through
the admin's buttons (the gates, a rollback, start, stop, promote): importing a
file sets them when it creates the row and never afterwards, so re-importing
yesterday's file cannot undo a rollback or skip a gate. An experiment's variants
change only while it is a draft: users already split must stay where they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.config import GatewayConfig, Node

ROLLOUT_FIELDS = {"legacy", "legacy_route", "new", "phases", "status", "percent", "thresholds"}
THRESHOLD_FIELDS = {"availability_pct", "latency_factor", "spend_pct", "quality", "min_requests"}
EXPERIMENT_FIELDS = {"route", "metric", "status", "description", "variants"}
VARIANT_FIELDS = {"name", "weight", "deployment", "route", "parameters"}
# Threshold in the file -> the Rollout field it sets.
THRESHOLDS = {
    "availability_pct": "min_availability_pct",
    "latency_factor": "max_latency_factor",
    "spend_pct": "max_spend_pct",
    "quality": "min_quality",
}


@dataclass
class RolloutSpec:
    route: str
    legacy: list[str] = field(default_factory=list)
    legacy_route: str = ""
    new: list[str] = field(default_factory=list)
    phases: list[int] = field(default_factory=lambda: [0, 25, 50, 100])
    status: str = "draft"
    percent: int = 0
    thresholds: dict[str, Decimal] = field(default_factory=dict)
    min_requests: int | None = None
    line: int = 0


@dataclass
class VariantSpec:
    name: str
    weight: int
    kind: str
    target: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentSpec:
    name: str
    route: str
    metric: str = "latency"
    status: str = "draft"
    description: str = ""
    variants: list[VariantSpec] = field(default_factory=list)
    line: int = 0


def parse_into(
    config: GatewayConfig, top: dict[str, Node], deployments: set[tuple[str, str]]
) -> None:
    """Read the two sections of ``top`` into ``config`` (ConfigError naming the line)."""
    from routing.config import _mapping

    routes = {r.name for r in config.routes}
    labels = {f"{p}/{m}" for p, m in deployments}
    if "rollouts" in top:
        for route, node in _mapping(top["rollouts"], "rollouts").items():
            config.rollouts.append(_rollout(route, node, routes, labels))
    if "experiments" in top:
        for name, node in _mapping(top["experiments"], "experiments").items():
            config.experiments.append(_experiment(name, node, routes, labels))


def _labels(node: Node, where: str, labels: set[str]) -> list[str]:
    from routing.config import ConfigError, _sequence

    found = []
    for index, item in enumerate(_sequence(node, where)):
        if not isinstance(item.value, str) or item.value not in labels:
            raise ConfigError(
                item.line, f"{where}[{index}]", f"'{item.value}' is not listed under models"
            )
        found.append(item.value)
    if not found:
        raise ConfigError(node.line, where, "needs at least one 'provider/model'")
    return found


def _whole(node: Node, where: str, low: int, high: int) -> int:
    from routing.config import ConfigError

    value = node.value
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(node.line, where, f"must be a whole number from {low} to {high}")
    return value


def _rollout(route: str, node: Node, routes: set[str], labels: set[str]) -> RolloutSpec:
    from routing.config import ConfigError, _choice, _decimal, _fields, _sequence, _str

    where = f"rollouts.{route}"
    if route not in routes:
        raise ConfigError(node.line, where, f"'{route}' is not a route in this file")
    fields = _fields(node, where, ROLLOUT_FIELDS)
    spec = RolloutSpec(route=route, line=node.line)
    if ("legacy" in fields) == ("legacy_route" in fields):
        raise ConfigError(node.line, f"{where}.legacy", "give legacy (a chain) or legacy_route")
    if "legacy" in fields:
        spec.legacy = _labels(fields["legacy"], f"{where}.legacy", labels)
    else:
        spec.legacy_route = _str(fields, "legacy_route", where, required=True)
        if spec.legacy_route not in routes:
            raise ConfigError(
                fields["legacy_route"].line,
                f"{where}.legacy_route",
                f"'{spec.legacy_route}' is not a route in this file",
            )
    if "new" in fields:
        spec.new = _labels(fields["new"], f"{where}.new", labels)
    if "phases" in fields:
        items = _sequence(fields["phases"], f"{where}.phases")
        spec.phases = [_whole(i, f"{where}.phases", 0, 100) for i in items]
        if not spec.phases or spec.phases != sorted(set(spec.phases)):
            raise ConfigError(fields["phases"].line, f"{where}.phases", "must rise, e.g. [0, 25]")
    spec.status = _choice(fields, "status", where, ["draft", "running"], default="draft")
    if "percent" in fields:
        spec.percent = _whole(fields["percent"], f"{where}.percent", 0, 100)
        if spec.percent not in spec.phases:
            raise ConfigError(fields["percent"].line, f"{where}.percent", "must be a phase")
    else:
        spec.percent = spec.phases[0]
    if "thresholds" in fields:
        thresholds = _fields(fields["thresholds"], f"{where}.thresholds", THRESHOLD_FIELDS)
        for name in THRESHOLDS:
            value = _decimal(thresholds, name, f"{where}.thresholds")
            if value is not None:
                spec.thresholds[name] = value
        if "min_requests" in thresholds:
            spec.min_requests = _whole(
                thresholds["min_requests"], f"{where}.thresholds.min_requests", 1, 1_000_000
            )
    return spec


def _experiment(name: str, node: Node, routes: set[str], labels: set[str]) -> ExperimentSpec:
    from routing.config import ConfigError, _choice, _fields, _mapping, _sequence, _str
    from routing.experiments.models import parameters_problem
    from routing.models import Experiment

    where = f"experiments.{name}"
    fields = _fields(node, where, EXPERIMENT_FIELDS)
    route = _str(fields, "route", where, required=True, line=node.line)
    if route not in routes:
        raise ConfigError(fields["route"].line, f"{where}.route", f"'{route}' is not a route")
    spec = ExperimentSpec(
        name=name,
        route=route,
        metric=_choice(fields, "metric", where, Experiment.Metric.values, default="latency"),
        status=_choice(fields, "status", where, ["draft", "running"], default="draft"),
        description=_str(fields, "description", where),
        line=node.line,
    )
    if "variants" not in fields:
        raise ConfigError(node.line, f"{where}.variants", "is required")
    seen = set()
    for index, item in enumerate(_sequence(fields["variants"], f"{where}.variants")):
        at = f"{where}.variants[{index}]"
        variant = _fields(item, at, VARIANT_FIELDS)
        variant_name = _str(variant, "name", at, required=True, line=item.line)
        if variant_name in seen:
            raise ConfigError(item.line, f"{at}.name", f"'{variant_name}' is used twice")
        seen.add(variant_name)
        weight = (
            _whole(variant["weight"], f"{at}.weight", 0, 1_000_000) if "weight" in variant else 50
        )
        targets = [k for k in ("deployment", "route", "parameters") if k in variant]
        if len(targets) > 1:
            raise ConfigError(item.line, at, "give one of deployment, route or parameters")
        kind = targets[0] if targets else "deployment"
        target, parameters = "", {}
        if kind == "deployment" and targets:
            target = _str(variant, "deployment", at, required=True)
            if target not in labels:
                raise ConfigError(
                    variant["deployment"].line, f"{at}.deployment", f"'{target}' is not a model"
                )
        elif kind == "route":
            target = _str(variant, "route", at, required=True)
            if target not in routes:
                raise ConfigError(variant["route"].line, f"{at}.route", f"'{target}' is no route")
        elif kind == "parameters":
            parameters = {k: v.value for k, v in _mapping(variant["parameters"], at).items()}
            problem = parameters_problem(parameters)
            if problem:
                raise ConfigError(variant["parameters"].line, f"{at}.parameters", problem)
        spec.variants.append(VariantSpec(variant_name, weight, kind, target, parameters))
    if not spec.variants:
        raise ConfigError(fields["variants"].line, f"{where}.variants", "needs a variant")
    return spec


# -- applying and exporting ---------------------------------------------------------------


def apply(config: GatewayConfig) -> Counter[str]:
    """Create or update the file's rollouts and experiments (inside import_config's transaction)."""
    report: Counter[str] = Counter()
    for rollout in config.rollouts:
        report[f"rollout {_apply_rollout(rollout)}"] += 1
    for experiment in config.experiments:
        report[f"experiment {_apply_experiment(experiment)}"] += 1
    return report


def _apply_rollout(spec: RolloutSpec) -> str:
    from routing.experiments.actions import advance
    from routing.models import Rollout, Route

    route = Route.objects.get(name=spec.route)
    wanted: dict[str, Any] = {
        "legacy_route": Route.objects.get(name=spec.legacy_route) if spec.legacy_route else None,
        "legacy_chain": spec.legacy,
        "new_chain": spec.new,
        "phases": spec.phases,
        **{THRESHOLDS[name]: value for name, value in spec.thresholds.items()},
    }
    if spec.min_requests is not None:
        wanted["min_requests"] = spec.min_requests
    rollout = Rollout.objects.exclude(status=Rollout.Status.ARCHIVED).filter(route=route).first()
    if rollout is None:
        rollout = Rollout.objects.create(route=route, **wanted)
        if spec.status == "running":
            advance(rollout)  # starts it at its first phase, with the baseline
            if spec.percent != rollout.percent:
                rollout.percent = spec.percent
                rollout.save(update_fields=["percent"])  # audited; bumps the table
        return "created"
    changed = [name for name, value in wanted.items() if getattr(rollout, name) != value]
    if not changed:
        return "unchanged"
    for name in changed:
        setattr(rollout, name, wanted[name])
    rollout.save()
    return "updated"


def _apply_experiment(spec: ExperimentSpec) -> str:
    from routing.config import ConfigError
    from routing.experiments.actions import start_experiment
    from routing.models import Deployment, Experiment, Route, Variant

    route = Route.objects.get(name=spec.route)
    experiment = Experiment.objects.filter(name=spec.name).first()
    outcome = "unchanged"
    if experiment is None:
        experiment = Experiment.objects.create(
            name=spec.name, route=route, metric=spec.metric, description=spec.description
        )
        outcome = "created"
    current = [_variant_spec(v) for v in experiment.variants.all()]
    if current != spec.variants or experiment.route_id != route.pk:
        if experiment.status != Experiment.Status.DRAFT:
            raise ConfigError(
                spec.line,
                f"experiments.{spec.name}",
                f"is {experiment.status}: its route and variants change only while it is a draft",
            )
        experiment.route = route
        experiment.variants.all().delete()
        for position, variant in enumerate(spec.variants):
            deployment = None
            if variant.kind == "deployment" and variant.target:
                provider, model = variant.target.split("/", 1)
                deployment = Deployment.objects.get(provider__name=provider, name=model)
            Variant.objects.create(
                experiment=experiment,
                name=variant.name,
                weight=variant.weight,
                kind=variant.kind,
                position=position,
                deployment=deployment,
                target_route=(
                    Route.objects.get(name=variant.target) if variant.kind == "route" else None
                ),
                parameters=variant.parameters,
            )
        outcome = "updated" if outcome == "unchanged" else outcome
    if (experiment.metric, experiment.description) != (spec.metric, spec.description):
        experiment.metric, experiment.description = spec.metric, spec.description
        outcome = "updated" if outcome == "unchanged" else outcome
    experiment.save()
    if outcome == "created" and spec.status == "running":
        start_experiment(experiment)
    return outcome


def _variant_spec(variant: Any) -> VariantSpec:
    target = ""
    if variant.kind == "deployment" and variant.deployment_id:
        target = str(variant.deployment)
    elif variant.kind == "route" and variant.target_route_id:
        target = variant.target_route.name
    return VariantSpec(variant.name, variant.weight, variant.kind, target, dict(variant.parameters))


def export() -> dict[str, Any]:
    """The two sections, in the file's shape (empty ones left out)."""
    from routing.models import Experiment, Rollout

    exported: dict[str, Any] = {}
    rollouts = {}
    for rollout in Rollout.objects.exclude(status=Rollout.Status.ARCHIVED).select_related(
        "route", "legacy_route"
    ):
        entry: dict[str, Any] = {}
        if rollout.legacy_route is not None:
            entry["legacy_route"] = rollout.legacy_route.name
        else:
            entry["legacy"] = list(rollout.legacy_chain)
        if rollout.new_chain:
            entry["new"] = list(rollout.new_chain)
        entry["phases"] = list(rollout.phases)
        entry["status"] = "draft" if rollout.status == Rollout.Status.DRAFT else "running"
        entry["percent"] = rollout.percent
        entry["thresholds"] = {
            **{
                name: str(getattr(rollout, column).normalize())
                for name, column in THRESHOLDS.items()
            },
            "min_requests": rollout.min_requests,
        }
        rollouts[rollout.route.name] = entry
    if rollouts:
        exported["rollouts"] = rollouts
    experiments = {}
    for experiment in Experiment.objects.select_related("route").prefetch_related(
        "variants__deployment__provider", "variants__target_route"
    ):
        variants = []
        for variant in experiment.variants.all():
            spec = _variant_spec(variant)
            item: dict[str, Any] = {"name": spec.name, "weight": spec.weight}
            if spec.kind == "parameters":
                item["parameters"] = spec.parameters
            elif spec.target:
                item[spec.kind] = spec.target
            variants.append(item)
        experiments[experiment.name] = {
            "route": experiment.route.name,
            "metric": experiment.metric,
            "status": "draft" if experiment.status == Experiment.Status.DRAFT else "running",
            **({"description": experiment.description} if experiment.description else {}),
            "variants": variants,
        }
    if experiments:
        exported["experiments"] = experiments
    return exported
