"""Sticky assignment of a request to a rollout arm and an experiment arm: pure functions.

A user's bucket is ``sha256("<salt>:<user>")`` read as a number, modulo 10,000:
the same in every process and every Python run (Python's own ``hash()`` is salted
per process, so it is never used). Each rollout and each experiment has its own
salt, so the splits are independent of each other.

- Rollout: buckets below ``percent x 100`` take the new path. Raising the
  percentage only adds buckets, so a user on the new path stays there as the
  rollout advances, and comes back to it after a rollback and a new start.
- Experiment: the variants' weights cut [0, 10000) into consecutive ranges, in
  variant order; a bucket's range is its arm.

The user is the request's end user (OpenAI's ``user`` or metadata ``user_id``).
A request that names none is assigned by its request id: per request, not sticky,
and its decision says ``"sticky": false``.

`choose()` is what the engine (and a route preview) calls: the route's chain and
parameters after the rollout and the experiment, and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routing.experiments.snapshot import ArmSet
    from routing.table import Resolution

BUCKETS = 10_000


def bucket(salt: str, user: str) -> int:
    """The user's bucket in [0, 10000) under ``salt``: stable across processes and runs."""
    digest = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def rollout_arm(percent: int, user_bucket: int) -> str:
    """ "new" for the first ``percent`` percent of buckets, "legacy" for the rest."""
    return "new" if user_bucket < percent * (BUCKETS // 100) else "legacy"


def weighted_index(weights: Sequence[int], user_bucket: int) -> int:
    """The index of the weight whose range of [0, 10000) holds the bucket.

    Ranges are cut at round(cumulative weight / total x 10000); a zero weight
    gets an empty range. With no positive weight, the first arm takes everyone.
    """
    total = sum(max(0, w) for w in weights)
    if total <= 0:
        return 0
    cumulative = 0
    for index, weight in enumerate(weights):
        cumulative += max(0, weight)
        if user_bucket < round(cumulative * BUCKETS / total):
            return index
    return len(weights) - 1


@dataclass
class Choice:
    """What the rollout and the experiment did to one request."""

    resolution: Resolution
    parameters: dict[str, Any] = field(default_factory=dict)  # set on the request
    rollout_arm: str = ""  # "legacy" / "new", or "" when no rollout runs on the route
    experiment: str = ""
    arm: str = ""
    decision: dict[str, Any] = field(default_factory=dict)  # "rollout" / "experiment" entries


def choose(arms: ArmSet | None, resolution: Resolution, user: str, request_id: str) -> Choice:
    """Apply the route's rollout, then its experiment, for this user (or request)."""
    from routing.table import Resolution

    choice = Choice(resolution)
    if arms is None:
        return choice
    sticky = bool(user)
    who = user or request_id
    route = resolution.route
    rollout = arms.rollouts.get(route)
    if rollout is not None:
        user_bucket = bucket(rollout.salt, who)
        arm = rollout_arm(rollout.percent, user_bucket)
        chain = rollout.new if arm == "new" else rollout.legacy
        note = ""
        if chain:
            choice.resolution = Resolution(route, chain)
        else:
            note = f"the {arm} path has no deployment in this environment; the route's chain served"
        choice.rollout_arm = arm
        choice.decision["rollout"] = {
            "id": rollout.id,
            "percent": rollout.percent,
            "arm": arm,
            "bucket": user_bucket,
            "sticky": sticky,
            "chain": [d.label for d in choice.resolution.chain],
            **({"note": note} if note else {}),
        }
    promoted = arms.parameters.get(route)
    if promoted:
        choice.parameters.update(promoted.parameters)
        choice.decision["experiment"] = {
            "name": promoted.name,
            "arm": promoted.arm,
            "promoted": True,
            "parameters": dict(promoted.parameters),
        }
    experiment = arms.experiments.get(route)
    if experiment is not None and experiment.arms:
        user_bucket = bucket(experiment.salt, who)
        index = weighted_index([a.weight for a in experiment.arms], user_bucket)
        chosen = experiment.arms[index]
        chain = chosen.chain(choice.resolution.chain)
        if chain:
            choice.resolution = Resolution(route, chain)
        choice.parameters.update(chosen.parameters)
        choice.experiment, choice.arm = experiment.name, chosen.name
        choice.decision["experiment"] = {
            "name": experiment.name,
            "arm": chosen.name,
            "kind": chosen.kind,
            "bucket": user_bucket,
            "sticky": sticky,
            **({"parameters": dict(chosen.parameters)} if chosen.parameters else {}),
        }
    return choice
