"""Routing rules: conditions on a request's context, and what to do when they hold.

A rule's conditions name meeting types, industries, languages, participant
bands, use cases, client keys and a transcript length range; an empty
condition matches anything, and a rule matches when all of its conditions do.
Its actions pick another route, keep only or drop some candidates, move some
first, and set parameters: ``max_tokens`` (fixed, or ``base + per participant
* n`` up to a cap) and a long-context deployment tried first above a length.

Rules stack. Every enabled rule that matches applies, in priority order (lowest
number first); each setting (the route, the preferred order, max_tokens, the
long-context deployment) comes from the first matching rule that sets it, while
``only`` and ``exclude`` filters add up. So "executive meetings → a stronger
model" and "more than 8 participants → more max_tokens" both hold for a large
executive meeting, and a higher-priority rule overrides a lower one on the
setting they share. A meeting type or language that was detected rather than stated matches only
with a confidence of at least ``MIN_CONFIDENCE``. A filter that would leave no
candidate is not applied (the
decision says so): a rule never turns a servable request into an error;
compliance (routing.policy) is what refuses.

The rules are in the routing table (`RuleInfo`), so matching costs no database
query. `apply` explains itself in a dict that goes to the usage record's
``decision["rule"]`` and to the route preview.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from routing.context import PARTICIPANT_BANDS, RoutingContext

if TYPE_CHECKING:
    from routing.schema import ChatRequest
    from routing.table import DeploymentInfo

BANDS = tuple(label for _, _, label in PARTICIPANT_BANDS)
CONDITIONS = (
    "meeting_types",
    "industries",
    "languages",
    "participant_bands",
    "use_cases",
    "client_keys",
)
LIST_ACTIONS = ("only", "exclude", "prefer")
# A rule's model fields, as the admin shows them: conditions, then actions.
CONDITION_FIELDS = (*CONDITIONS, "min_transcript_chars", "max_transcript_chars")
ACTION_FIELDS = (
    "route",
    *LIST_ACTIONS,
    "max_tokens",
    "max_tokens_per_participant",
    "max_tokens_cap",
    "long_context_deployment",
    "long_context_above_chars",
)
# A detected meeting type or language below this confidence matches no rule.
MIN_CONFIDENCE = 0.6


@dataclass(frozen=True)
class RuleInfo:
    name: str
    priority: int = 100
    meeting_types: frozenset[str] = frozenset()
    industries: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    participant_bands: frozenset[str] = frozenset()
    use_cases: frozenset[str] = frozenset()
    client_keys: frozenset[str] = frozenset()
    min_transcript_chars: int | None = None
    max_transcript_chars: int | None = None
    route: str = ""
    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    max_tokens: int | None = None
    max_tokens_per_participant: int | None = None
    max_tokens_cap: int | None = None
    long_context_deployment: str = ""
    long_context_above_chars: int | None = None

    @classmethod
    def of(cls, rule: Any) -> RuleInfo:
        """From a RoutingRule row."""
        return cls(
            name=rule.name,
            priority=rule.priority,
            **{name: frozenset(normalised(getattr(rule, name))) for name in CONDITIONS},
            min_transcript_chars=rule.min_transcript_chars,
            max_transcript_chars=rule.max_transcript_chars,
            route=rule.route,
            only=tuple(rule.only or ()),
            exclude=tuple(rule.exclude or ()),
            prefer=tuple(rule.prefer or ()),
            max_tokens=rule.max_tokens,
            max_tokens_per_participant=rule.max_tokens_per_participant,
            max_tokens_cap=rule.max_tokens_cap,
            long_context_deployment=rule.long_context_deployment,
            long_context_above_chars=rule.long_context_above_chars,
        )

    def matches(self, context: RoutingContext, asked: str) -> list[str]:
        """Why it matches (one phrase per condition), or [] when it does not."""
        why = []
        checks = (
            (self.meeting_types, context.meeting_type, "meeting type"),
            (self.industries, context.industry, "industry"),
            (self.languages, context.language, "language"),
            (self.participant_bands, context.participant_band, "participants"),
            (self.use_cases, context.use_case or asked, "use case"),
            (self.client_keys, context.client_key, "client key"),
        )
        confidences = {
            "meeting type": (context.meeting_type_confidence, "meeting_type"),
            "language": (context.language_confidence, "language"),
        }
        for wanted, value, label in checks:
            if not wanted:
                continue
            if value not in wanted:
                return []
            confidence, field_name = confidences.get(label, (1.0, ""))
            if context.sources.get(field_name) == "detected":
                # Detected, not stated: a guess too unsure must not pick an expensive route.
                if confidence < MIN_CONFIDENCE:
                    return []
                why.append(f"{label} {value} (detected, confidence {confidence:.2f})")
                continue
            why.append(f"{label} {value}")
        chars = context.transcript_chars
        if self.min_transcript_chars is not None:
            if chars < self.min_transcript_chars:
                return []
            why.append(f"transcript {chars} ≥ {self.min_transcript_chars} chars")
        if self.max_transcript_chars is not None:
            if chars > self.max_transcript_chars:
                return []
            why.append(f"transcript {chars} ≤ {self.max_transcript_chars} chars")
        return why or ["no conditions"]

    def wanted_max_tokens(self, participants: int | None) -> int | None:
        if self.max_tokens_per_participant is None:
            return self.max_tokens
        total = (self.max_tokens or 0) + self.max_tokens_per_participant * (participants or 1)
        return min(total, self.max_tokens_cap) if self.max_tokens_cap else total


@dataclass
class RuleOutcome:
    """What the matching rules decided, before the route is resolved."""

    matched: list[RuleInfo] = field(default_factory=list)
    route: str = ""
    route_rule: str = ""
    explanation: dict[str, Any] = field(default_factory=dict)


def choose(
    rules: Iterable[RuleInfo], context: RoutingContext, asked: str
) -> tuple[RuleOutcome, dict[str, Any]]:
    """The matching rules (in priority order) and the route they pick, if any."""
    outcome = RuleOutcome()
    explanation: dict[str, Any] = {"matched": [], "actions": []}
    for rule in rules:  # the table keeps them sorted by priority
        why = rule.matches(context, asked)
        if not why:
            continue
        outcome.matched.append(rule)
        explanation["matched"].append({"rule": rule.name, "priority": rule.priority, "why": why})
        if rule.route and not outcome.route:
            outcome.route, outcome.route_rule = rule.route, rule.name
    explanation["rule"] = outcome.matched[0].name if outcome.matched else ""
    if outcome.route and outcome.route != asked:
        explanation["actions"].append(
            {"rule": outcome.route_rule, "action": f"route {asked} → {outcome.route}"}
        )
    outcome.explanation = explanation
    return outcome, explanation


def names(deployment: DeploymentInfo) -> tuple[str, str]:
    return deployment.provider, deployment.label


def apply(
    outcome: RuleOutcome,
    chain: tuple[DeploymentInfo, ...],
    request: ChatRequest,
    context: RoutingContext,
    deployments: dict[str, tuple[DeploymentInfo, ...]],
) -> tuple[DeploymentInfo, ...]:
    """Filter and reorder ``chain`` and set the request's parameters, as the matched rules say.

    ``deployments`` is the environment's "provider/model" index, for a long-context
    deployment that is not in the route. The request's ``params`` are changed in place.
    """
    actions = outcome.explanation.setdefault("actions", [])
    for rule in outcome.matched:
        for kind in ("only", "exclude"):
            listed = getattr(rule, kind)
            if not listed:
                continue
            kept = tuple(d for d in chain if (kind == "only") == any(n in listed for n in names(d)))
            if kept:
                if len(kept) != len(chain):
                    actions.append(
                        {
                            "rule": rule.name,
                            "action": f"{kind} {', '.join(listed)}",
                            "dropped": [d.label for d in chain if d not in kept],
                        }
                    )
                chain = kept
            else:
                actions.append(
                    {
                        "rule": rule.name,
                        "action": f"{kind} {', '.join(listed)}",
                        "skipped": "it would leave no candidate",
                    }
                )
    preferring = next((r for r in outcome.matched if r.prefer), None)
    if preferring is not None:

        def place(d: DeploymentInfo) -> int:
            hits = [i for i, n in enumerate(preferring.prefer) if n in names(d)]
            return hits[0] if hits else len(preferring.prefer)

        chain = tuple(sorted(chain, key=place))  # stable: the others keep their order
        actions.append(
            {"rule": preferring.name, "action": f"prefer {', '.join(preferring.prefer)}"}
        )
    long_rule = next(
        (
            r
            for r in outcome.matched
            if r.long_context_deployment
            and context.transcript_chars > (r.long_context_above_chars or 0)
        ),
        None,
    )
    if long_rule is not None:
        found = deployments.get(long_rule.long_context_deployment, ())
        if found:
            target = found[0]
            chain = (target, *(d for d in chain if d.id != target.id))
            actions.append(
                {
                    "rule": long_rule.name,
                    "action": f"long context: {target.label} first ({context.transcript_chars} "
                    f"> {long_rule.long_context_above_chars or 0} chars)",
                }
            )
        else:
            actions.append(
                {
                    "rule": long_rule.name,
                    "action": f"long context {long_rule.long_context_deployment}",
                    "skipped": "not deployed in this environment",
                }
            )
    sizing = next(
        (r for r in outcome.matched if r.max_tokens is not None or r.max_tokens_per_participant),
        None,
    )
    if sizing is not None:
        wanted = sizing.wanted_max_tokens(context.participants)
        if request.max_output_tokens is not None:
            actions.append(
                {
                    "rule": sizing.name,
                    "action": f"max_tokens {wanted}",
                    "skipped": f"the request set its own ({request.max_output_tokens})",
                }
            )
        elif wanted:
            request.params["max_tokens"] = wanted
            actions.append(
                {"rule": sizing.name, "action": f"max_tokens {wanted}", "param": "max_tokens"}
            )
    outcome.explanation["params"] = (
        {"max_tokens": request.params["max_tokens"]}
        if sizing is not None and "max_tokens" in request.params
        else {}
    )
    return chain


# -- validation (the admin's form and import_config) ------------------------------------


def normalised(values: Iterable[str] | None) -> list[str]:
    """As routing.context normalises what clients state: lower case, words joined by _."""
    out = []
    for value in values or ():
        text = str(value).strip().lower()
        out.append(text if text in BANDS else text.replace(" ", "_").replace("-", "_"))
    return out


def problems(rule: Any, routes: set[str], labels: set[str], providers: set[str]) -> dict[str, str]:
    """What is wrong with a rule, by field; {} when nothing is."""
    errors: dict[str, str] = {}
    for name in (*CONDITIONS, *LIST_ACTIONS):
        value = getattr(rule, name)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            errors[name] = "must be a list of names"
    bands = rule.participant_bands
    if "participant_bands" not in errors and not set(bands) <= set(BANDS):
        errors["participant_bands"] = f"bands are {', '.join(BANDS)}"
    low, high = rule.min_transcript_chars, rule.max_transcript_chars
    if low is not None and high is not None and low > high:
        errors["max_transcript_chars"] = "is below min_transcript_chars: nothing could match"
    if rule.route and rule.route not in routes:
        errors["route"] = f"there is no route '{rule.route}'"
    for name in LIST_ACTIONS:
        if name in errors:
            continue
        unknown = [v for v in getattr(rule, name) if v not in providers and v not in labels]
        if unknown:
            errors[name] = f"{', '.join(unknown)}: neither a provider nor a provider/model"
    if rule.only and rule.exclude and set(rule.only) & set(rule.exclude):
        errors["exclude"] = "names a candidate that only also keeps"
    if rule.long_context_deployment and rule.long_context_deployment not in labels:
        errors["long_context_deployment"] = (
            f"'{rule.long_context_deployment}' is not a deployment (provider/model)"
        )
    if rule.long_context_above_chars is not None and not rule.long_context_deployment:
        errors["long_context_deployment"] = "name the deployment to use above that length"
    if rule.max_tokens_cap is not None and not rule.max_tokens_per_participant:
        errors["max_tokens_cap"] = (
            "caps the per-participant formula: give max_tokens_per_participant"
        )
    if (
        rule.max_tokens_cap is not None
        and rule.max_tokens is not None
        and rule.max_tokens_cap < rule.max_tokens
    ):
        errors["max_tokens_cap"] = "is below the base max_tokens"
    acts = (
        rule.route
        or rule.only
        or rule.exclude
        or rule.prefer
        or rule.max_tokens is not None
        or rule.max_tokens_per_participant
        or rule.long_context_deployment
    )
    if not acts and not errors:
        errors["route"] = "the rule does nothing: give it at least one action"
    return errors


def check_rule(rule: Any) -> None:
    """Raise ValidationError naming each bad field of a RoutingRule row."""
    from django.core.exceptions import ValidationError

    from routing.models import Deployment, Provider, Route

    for name in CONDITIONS:
        value = getattr(rule, name)
        if isinstance(value, list):
            setattr(rule, name, normalised(value))
    labels = {str(d) for d in Deployment.objects.select_related("provider")}
    errors = problems(
        rule,
        set(Route.objects.values_list("name", flat=True)),
        labels,
        set(Provider.objects.values_list("name", flat=True)),
    )
    if errors:
        raise ValidationError(errors)
