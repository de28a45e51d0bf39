"""Routing rules: each kind of condition and action, through the live gateway and the demo."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from django.core.exceptions import ValidationError

from billing.models import UsageRecord
from routing.actions import export_config, import_config
from routing.config import ConfigError, parse
from routing.models import RoutingRule
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def ask(client: openai.OpenAI, model: str = "summary", **metadata: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
        metadata=metadata or None,  # type: ignore[arg-type]
    )


def answered_by(raw: Any) -> str:
    return f"{raw.headers['x-switchboard-provider']}/{raw.headers['x-switchboard-model']}"


def decision_of(raw: Any) -> dict[str, Any]:
    drain_ledger()
    record = UsageRecord.objects.get(request_id=raw.headers["x-switchboard-request-id"])
    return dict(record.decision)


def make_rule(name: str, **fields: Any) -> RoutingRule:
    rule = RoutingRule(name=name, **fields)
    rule.full_clean()
    rule.save()
    return rule


# -- conditions and actions -----------------------------------------------------------------


def test_an_executive_meeting_summary_goes_to_the_executive_route(
    openai_client: openai.OpenAI,
) -> None:
    raw = ask(openai_client, meeting_type="executive")

    assert raw.headers["x-switchboard-route"] == "executive"
    assert answered_by(raw) == "aimlapi/gpt-4o"
    rule = decision_of(raw)["rule"]
    assert rule["rule"] == "executive-meetings"
    assert rule["matched"][0]["why"] == ["meeting type executive", "use case summary"]
    assert {"rule": "executive-meetings", "action": "route summary → executive"} in rule["actions"]


def test_a_meeting_of_another_type_keeps_the_route_it_asked_for(
    openai_client: openai.OpenAI,
) -> None:
    raw = ask(openai_client, meeting_type="standup")

    assert raw.headers["x-switchboard-route"] == "summary"
    assert answered_by(raw) == "aimlapi/gpt-4o-mini"
    assert decision_of(raw)["rule"]["matched"] == []


def test_a_large_meeting_gets_max_tokens_scaled_by_its_participants(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    raw = ask(openai_client, participants="9")

    sent = demo.calls()["aimlapi"]["last_request"]
    assert sent["max_tokens"] == 400 + 60 * 9
    rule = decision_of(raw)["rule"]
    assert rule["params"] == {"max_tokens": 940}
    assert rule["matched"][0]["why"] == ["participants 6-10"]


def test_the_per_participant_formula_stops_at_its_cap(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    ask(openai_client, participants="40")

    assert demo.calls()["aimlapi"]["last_request"]["max_tokens"] == 2000


def test_a_request_that_sets_its_own_max_tokens_keeps_it(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary",
        messages=MESSAGES,  # type: ignore[arg-type]
        metadata={"participants": "9"},
        max_tokens=50,
    )

    assert demo.calls()["aimlapi"]["last_request"]["max_tokens"] == 50
    actions = decision_of(raw)["rule"]["actions"]
    assert actions[0]["skipped"] == "the request set its own (50)"


def test_participants_counted_from_the_transcript_match_a_band(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    transcript = "\n".join(f"Speaker{n}: I agree." for n in range(7))
    openai_client.chat.completions.create(
        model="summary", messages=[{"role": "user", "content": transcript}]
    )

    assert demo.calls()["aimlapi"]["last_request"]["max_tokens"] == 400 + 60 * 7


def test_a_long_transcript_goes_to_the_long_context_deployment_first(
    openai_client: openai.OpenAI,
) -> None:
    long = "Alice: we discussed the roadmap at length. " * 2500  # 107,500 characters
    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=[{"role": "user", "content": long}]
    )

    assert answered_by(raw) == "aimlapi/gemini-1.5-pro"
    assert "long context" in decision_of(raw)["rule"]["actions"][0]["action"]


def test_a_rule_can_exclude_a_provider_for_one_client_key(openai_client: openai.OpenAI) -> None:
    make_rule("no-aimlapi-for-tests", client_keys=["tests"], exclude=["aimlapi"])

    raw = ask(openai_client)

    assert answered_by(raw) == "openai/gpt-4o-mini"
    action = decision_of(raw)["rule"]["actions"][0]
    assert action["dropped"] == ["aimlapi/gpt-4o-mini"]


def test_a_rule_can_keep_only_some_candidates_by_language(openai_client: openai.OpenAI) -> None:
    make_rule("german-on-google", languages=["de"], only=["google/gemini-2.0-flash"])

    assert answered_by(ask(openai_client, language="de")) == "google/gemini-2.0-flash"
    assert answered_by(ask(openai_client, language="en")) == "aimlapi/gpt-4o-mini"


def test_a_rule_can_prefer_providers_for_an_industry(openai_client: openai.OpenAI) -> None:
    make_rule("finance-prefers-anthropic", industries=["finance"], prefer=["anthropic", "openai"])

    raw = ask(openai_client, industry="finance")

    assert answered_by(raw) == "anthropic/claude-3-5-haiku-latest"
    order = [c["deployment"] for c in decision_of(raw)["ranking"]["candidates"]]
    assert order[:2] == ["anthropic/claude-3-5-haiku-latest", "openai/gpt-4o-mini"]


def test_a_filter_that_would_leave_nothing_is_not_applied(openai_client: openai.OpenAI) -> None:
    make_rule("only-a-model-not-in-the-route", use_cases=["summary"], only=["aimlapi/gpt-4o"])

    raw = ask(openai_client)

    assert answered_by(raw) == "aimlapi/gpt-4o-mini"
    assert decision_of(raw)["rule"]["actions"][0]["skipped"] == "it would leave no candidate"


def test_the_higher_priority_rule_wins_a_setting_and_filters_add_up(
    openai_client: openai.OpenAI,
) -> None:
    make_rule("first", priority=1, use_cases=["summary"], prefer=["google"])
    make_rule("second", priority=2, use_cases=["summary"], prefer=["anthropic"], exclude=["openai"])

    raw = ask(openai_client)

    assert answered_by(raw) == "google/gemini-2.0-flash"
    order = [c["deployment"] for c in decision_of(raw)["ranking"]["candidates"]]
    assert "openai/gpt-4o-mini" not in order


def test_healthcare_stays_on_baa_providers_whatever_a_rule_prefers(
    openai_client: openai.OpenAI,
) -> None:
    make_rule("healthcare-prefers-aimlapi", industries=["healthcare"], prefer=["aimlapi"])

    raw = ask(openai_client, industry="healthcare")

    assert raw.headers["x-switchboard-provider"] == "anthropic"


def test_a_rule_applies_to_routes_not_to_a_model_asked_for_by_name(
    openai_client: openai.OpenAI,
) -> None:
    make_rule("everything-to-google", prefer=["google"])

    assert answered_by(ask(openai_client, model="openai/gpt-4o-mini")) == "openai/gpt-4o-mini"
    assert answered_by(ask(openai_client)) == "google/gemini-2.0-flash"


def test_a_disabled_rule_does_nothing(openai_client: openai.OpenAI) -> None:
    make_rule("off", enabled=False, prefer=["google"])

    assert answered_by(ask(openai_client)) == "aimlapi/gpt-4o-mini"


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"route": "nowhere"}, "route", "there is no route 'nowhere'"),
        ({"participant_bands": ["7-9"], "prefer": ["openai"]}, "participant_bands", "bands are"),
        ({"only": ["nobody"]}, "only", "nobody: neither a provider nor a provider/model"),
        (
            {"min_transcript_chars": 10, "max_transcript_chars": 5, "prefer": ["openai"]},
            "max_transcript_chars",
            "nothing could match",
        ),
        ({"long_context_deployment": "google/none"}, "long_context_deployment", "not a deployment"),
        ({"max_tokens_cap": 10}, "max_tokens_cap", "give max_tokens_per_participant"),
        ({"meeting_types": ["executive"]}, "route", "the rule does nothing"),
        ({"only": ["openai"], "exclude": ["openai"]}, "exclude", "only also keeps"),
    ],
)
def test_a_nonsensical_rule_is_refused_naming_the_field(
    demo: SimulatorHandle, fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        RoutingRule(name="bad", **fields).full_clean()

    assert message in " ".join(caught.value.message_dict[field])


def test_conditions_are_normalised_as_the_context_is(demo: SimulatorHandle) -> None:
    rule = make_rule("spaced", meeting_types=["Executive", "stand-up"], prefer=["openai"])

    assert rule.meeting_types == ["executive", "stand_up"]


# -- configuration as code ------------------------------------------------------------------


def test_the_demo_rules_and_strategies_survive_an_export_and_import(demo: SimulatorHandle) -> None:
    exported = export_config()

    assert [r["name"] for r in exported["rules"]] == [
        "executive-meetings",
        "large-meetings",
        "long-transcripts",
    ]
    assert exported["routes"]["live_assist"]["strategy"] == "fastest"
    import yaml

    report = import_config(parse(yaml.safe_dump(exported)))
    assert report["rule unchanged"] == 3
    assert export_config() == exported


def test_a_bad_rule_in_the_file_names_its_line(demo: SimulatorHandle) -> None:
    text = """
rules:
  - name: nonsense
    when: {participant_bands: ["2-3"]}
    then: {prefer: [openai]}
"""
    with pytest.raises(ConfigError) as caught:
        parse(text)

    assert str(caught.value).startswith("line 4: rules[0].participant_bands: bands are")


def test_a_detected_meeting_type_matches_only_when_confident() -> None:
    from routing.context import RoutingContext
    from routing.rules import RuleInfo

    rule = RuleInfo("exec", meeting_types=frozenset({"executive"}), route="executive")
    detected = {"meeting_type": "detected"}
    sure = RoutingContext(meeting_type="executive", meeting_type_confidence=0.82, sources=detected)
    unsure = RoutingContext(meeting_type="executive", meeting_type_confidence=0.4, sources=detected)
    stated = RoutingContext(meeting_type="executive", sources={"meeting_type": "metadata"})

    assert rule.matches(sure, "summary") == ["meeting type executive (detected, confidence 0.82)"]
    assert rule.matches(unsure, "summary") == []
    assert rule.matches(stated, "summary") == ["meeting type executive"]
