"""Admin helpers for routing rules and the live numbers of deployments."""

from __future__ import annotations

from typing import Any

from django import forms

from project.redis import sync_client
from routing import live
from routing.context import MEETING_TYPES
from routing.limits import deployment_tag
from routing.models import Deployment, RoutingRule
from routing.rules import ACTION_FIELDS, BANDS, CONDITION_FIELDS


class ListField(forms.CharField):
    """A list of names, typed comma-separated."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [part.strip() for part in text.split(",") if part.strip()]


def names_field(help_text: str) -> ListField:
    return ListField(
        required=False, help_text=help_text, widget=forms.TextInput(attrs={"size": 60})
    )


class RoutingRuleForm(forms.ModelForm):
    meeting_types = names_field(f"Comma-separated, e.g. {', '.join(MEETING_TYPES)}.")
    industries = names_field("Comma-separated, e.g. healthcare, finance.")
    languages = names_field("Comma-separated language codes, e.g. en, de.")
    participant_bands = forms.MultipleChoiceField(
        choices=[(band, band) for band in BANDS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    use_cases = names_field("Comma-separated: metadata use_case, or the route asked for.")
    client_keys = names_field("Comma-separated client key names.")
    only = names_field("Keep only these: providers or provider/model, comma-separated.")
    exclude = names_field("Drop these: providers or provider/model, comma-separated.")
    prefer = names_field("Move these first, in this order: providers or provider/model.")

    class Meta:
        model = RoutingRule
        fields = ["name", "description", "priority", "enabled", *CONDITION_FIELDS, *ACTION_FIELDS]


def describe_conditions(rule: RoutingRule) -> str:
    parts = [
        f"{label} {', '.join(values)}"
        for label, values in (
            ("meeting", rule.meeting_types),
            ("industry", rule.industries),
            ("language", rule.languages),
            ("participants", rule.participant_bands),
            ("use case", rule.use_cases),
            ("key", rule.client_keys),
        )
        if values
    ]
    if rule.min_transcript_chars is not None:
        parts.append(f"transcript ≥ {rule.min_transcript_chars} chars")
    if rule.max_transcript_chars is not None:
        parts.append(f"transcript ≤ {rule.max_transcript_chars} chars")
    return "; ".join(parts) or "always"


def describe_actions(rule: RoutingRule) -> str:
    parts = []
    if rule.route:
        parts.append(f"route {rule.route}")
    for label, values in (("only", rule.only), ("exclude", rule.exclude), ("prefer", rule.prefer)):
        if values:
            parts.append(f"{label} {', '.join(values)}")
    if rule.max_tokens_per_participant:
        cap = f", at most {rule.max_tokens_cap}" if rule.max_tokens_cap else ""
        parts.append(
            f"max_tokens {rule.max_tokens or 0} + {rule.max_tokens_per_participant} a head{cap}"
        )
    elif rule.max_tokens is not None:
        parts.append(f"max_tokens {rule.max_tokens}")
    if rule.long_context_deployment:
        parts.append(
            f"{rule.long_context_deployment} first above {rule.long_context_above_chars or 0} chars"
        )
    return "; ".join(parts)


def live_summary(deployment: Deployment) -> str:
    """In flight (of its cap), rolling latency, error rate, quality: shared by every process."""
    credentials = deployment.provider.credentials.filter(enabled=True)
    slot_keys = [f"{deployment_tag(deployment.id, c.id)}:slots" for c in credentials]
    numbers = live.read_sync(sync_client(), deployment.id, slot_keys)
    # Slots are taken only for deployments with a cap (routing.live).
    in_flight = (
        f"{numbers['in_flight']}/{deployment.max_concurrency} in flight"
        if deployment.max_concurrency
        else "no cap"
    )
    latency = f"{numbers['latency_ms']} ms" if numbers["latency_ms"] is not None else "- ms"
    quality = numbers["quality"] if numbers["quality"] is not None else "-"
    return f"{in_flight}, {latency}, {numbers['error_rate']:.0%} errors, quality {quality}"
