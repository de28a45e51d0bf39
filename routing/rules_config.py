"""Routing rules as code: the ``rules:`` section of the configuration file.

    rules:
      - name: executive-meetings
        priority: 10                       # lower applies first; default 100
        when: {meeting_types: [executive]}
        then: {prefer: [openai/gpt-4o]}
      - name: large-meetings
        priority: 20
        when: {participant_bands: ["6-10", "11+"]}
        then: {max_tokens: 800, max_tokens_per_participant: 60, max_tokens_cap: 2000}
      - name: long-transcripts
        when: {min_transcript_chars: 60000}
        then: {long_context: {deployment: google/gemini-1.5-pro, above_chars: 60000}}

``when`` takes meeting_types, industries, languages, participant_bands,
use_cases, client_keys (lists), min_transcript_chars and max_transcript_chars;
``then`` takes route, only, exclude, prefer (lists of providers or
provider/model labels), max_tokens, max_tokens_per_participant, max_tokens_cap
and long_context. A rule is matched by name on import; `export_config` writes
every rule back in this shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routing.config import (
    ConfigError,
    GatewayConfig,
    Node,
    _bool,
    _fields,
    _number,
    _sequence,
    _str,
)
from routing.rules import CONDITIONS, normalised, problems

RULE_FIELDS = {"name", "description", "priority", "enabled", "when", "then"}
WHEN_FIELDS = {*CONDITIONS, "min_transcript_chars", "max_transcript_chars"}
THEN_FIELDS = {
    "route",
    "only",
    "exclude",
    "prefer",
    "max_tokens",
    "max_tokens_per_participant",
    "max_tokens_cap",
    "long_context",
}
LONG_CONTEXT_FIELDS = {"deployment", "above_chars"}
LISTS = (*CONDITIONS, "only", "exclude", "prefer")


@dataclass
class RuleSpec:
    """A RoutingRule's fields, as the file gives them."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    line: int = 0


def parse_rules(nodes: list[Node], config: GatewayConfig) -> list[RuleSpec]:
    specs = []
    seen: set[str] = set()
    routes, labels, providers = _known(config)
    for index, node in enumerate(nodes):
        where = f"rules[{index}]"
        top = _fields(node, where, RULE_FIELDS)
        name = _str(top, "name", where, required=True, line=node.line)
        if name in seen:
            raise ConfigError(top["name"].line, f"{where}.name", f"a second rule named '{name}'")
        seen.add(name)
        when = _fields(top["when"], f"{where}.when", WHEN_FIELDS) if "when" in top else {}
        then = _fields(top["then"], f"{where}.then", THEN_FIELDS) if "then" in top else {}
        values: dict[str, Any] = {
            "description": _str(top, "description", where),
            "priority": _whole(top, "priority", where, 100),
            "enabled": _bool(top, "enabled", where, True),
        }
        lines: dict[str, int] = {}
        for part, label in ((when, "when"), (then, "then")):
            for key, value in part.items():
                lines[key] = value.line
                if key in LISTS:
                    items = [item.value for item in _sequence(value, f"{where}.{label}.{key}")]
                    values[key] = [str(item) for item in items]
                elif key == "route":
                    values[key] = _str(part, key, f"{where}.{label}")
                elif key == "long_context":
                    inner = _fields(value, f"{where}.then.long_context", LONG_CONTEXT_FIELDS)
                    values["long_context_deployment"] = _str(
                        inner, "deployment", f"{where}.then.long_context", required=True
                    )
                    values["long_context_above_chars"] = _whole(
                        inner, "above_chars", f"{where}.then.long_context", 0
                    )
                    lines["long_context_deployment"] = value.line
                    lines["long_context_above_chars"] = value.line
                else:
                    values[key] = _number(part, key, f"{where}.{label}", int, None)
        for name_ in CONDITIONS:
            values[name_] = normalised(values.get(name_, []))
        for name_ in ("only", "exclude", "prefer"):
            values.setdefault(name_, [])
        for name_ in (
            "min_transcript_chars",
            "max_transcript_chars",
            "max_tokens",
            "max_tokens_per_participant",
            "max_tokens_cap",
            "long_context_above_chars",
        ):
            values.setdefault(name_, None)
        values.setdefault("route", "")
        values.setdefault("long_context_deployment", "")
        errors = problems(_Shape(values), routes, labels, providers)
        if errors:
            key, message = next(iter(errors.items()))
            raise ConfigError(lines.get(key, node.line), f"{where}.{key}", message)
        specs.append(RuleSpec(name, values, node.line))
    return specs


class _Shape:
    """Attribute access over a dict, for `routing.rules.problems`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _whole(fields: dict[str, Node], key: str, where: str, default: int) -> int:
    node = fields.get(key)
    if node is None:
        return default
    if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < 0:
        raise ConfigError(node.line, f"{where}.{key}", "must be a whole number, 0 or more")
    return node.value


def _known(config: GatewayConfig) -> tuple[set[str], set[str], set[str]]:
    """Routes, provider/model labels and providers: the file's and the database's."""
    from routing.models import Deployment, Provider, Route

    routes = {r.name for r in config.routes} | set(Route.objects.values_list("name", flat=True))
    labels = {f"{m.provider}/{m.name}" for m in config.models} | {
        str(d) for d in Deployment.objects.select_related("provider")
    }
    providers = {p.name for p in config.providers} | set(
        Provider.objects.values_list("name", flat=True)
    )
    return routes, labels, providers


def apply_rule(spec: RuleSpec, upsert: Callable[..., tuple[Any, str]]) -> str:
    from routing.models import RoutingRule

    _, outcome = upsert(RoutingRule, {"name": spec.name}, **spec.fields)
    return outcome


def export_rules() -> list[dict[str, Any]]:
    from routing.models import RoutingRule

    exported = []
    for rule in RoutingRule.objects.all():
        when: dict[str, Any] = {name: list(getattr(rule, name)) for name in CONDITIONS}
        when.update(
            min_transcript_chars=rule.min_transcript_chars,
            max_transcript_chars=rule.max_transcript_chars,
        )
        then: dict[str, Any] = {
            "route": rule.route or None,
            "only": list(rule.only),
            "exclude": list(rule.exclude),
            "prefer": list(rule.prefer),
            "max_tokens": rule.max_tokens,
            "max_tokens_per_participant": rule.max_tokens_per_participant,
            "max_tokens_cap": rule.max_tokens_cap,
        }
        if rule.long_context_deployment:
            then["long_context"] = {
                "deployment": rule.long_context_deployment,
                "above_chars": rule.long_context_above_chars or 0,
            }
        entry: dict[str, Any] = {"name": rule.name, "priority": rule.priority}
        if rule.description:
            entry["description"] = rule.description
        if not rule.enabled:
            entry["enabled"] = False
        entry["when"] = {k: v for k, v in when.items() if v not in (None, [])}
        entry["then"] = {k: v for k, v in then.items() if v not in (None, [])}
        exported.append(entry)
    return exported
