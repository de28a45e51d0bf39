"""Every answer is scored by cheap rules, through the gateway, on the simulator's real answers."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from billing.models import UsageRecord
from routing.models import QualityRule, Route
from routing.quality import language
from routing.quality.scoring import score
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES: Any = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def scored(request_id: str) -> tuple[int | None, list[str]]:
    drain_ledger()
    record = UsageRecord.objects.get(request_id=request_id)
    return record.quality_score, record.decision["quality"]["fired"]


def ask(sdk: openai.OpenAI, **extra: Any) -> tuple[str, str]:
    raw = sdk.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES, **extra)
    answer = raw.parse()
    return raw.headers["x-switchboard-request-id"], answer.choices[0].message.content or ""


def test_a_good_answer_scores_100_and_no_rule_fires(openai_client: openai.OpenAI) -> None:
    request_id, text = ask(openai_client)

    assert text.startswith("Simulated aimlapi")
    assert scored(request_id) == (100, [])
    record = UsageRecord.objects.get(request_id=request_id)
    assert record.decision["quality"] == {"score": 100, "fired": []}
    assert "context" in record.decision  # the other explanations are kept beside it


def test_an_empty_answer_scores_0(openai_client: openai.OpenAI, demo: SimulatorHandle) -> None:
    demo.fault(provider="aimlapi", mode="empty")

    request_id, text = ask(openai_client)

    assert text == ""
    assert scored(request_id) == (0, ["empty"])


def test_an_answer_cut_at_its_token_limit_is_truncated(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, max_tokens=3
    )

    assert raw.parse().choices[0].finish_reason == "length"
    assert scored(raw.headers["x-switchboard-request-id"]) == (60, ["truncated"])


def test_a_refusal_loses_the_refusal_weight(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="refusal")

    request_id, text = ask(openai_client)

    assert text.startswith("I'm sorry, but I can't")
    assert scored(request_id) == (40, ["refusal"])


def test_invalid_json_is_caught_only_when_json_was_asked_for(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    json_mode: Any = {"type": "json_object"}
    good, _ = ask(openai_client, response_format=json_mode)
    demo.fault(provider="aimlapi", mode="invalid_json", times=2)
    bad, text = ask(openai_client, response_format=json_mode)
    not_asked, _ = ask(openai_client)

    assert text.startswith('{"answer"') and not text.endswith("}")
    assert scored(good) == (100, [])
    assert scored(bad) == (50, ["invalid_json"])
    assert scored(not_asked) == (100, [])


def test_an_answer_in_another_language_than_the_one_stated_is_caught(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    german = "Wir haben vereinbart, dass die Version am Freitag ausgeliefert wird, nicht später."
    demo.fault(provider="aimlapi", mode="answer", text=german, times=2)

    in_german, _ = ask(openai_client, metadata={"language": "de"})
    asked_english, _ = ask(openai_client, metadata={"language": "en-GB"})
    nothing_stated, _ = ask(openai_client)  # the simulator's own English answer

    assert scored(in_german) == (100, [])
    assert scored(asked_english) == (50, ["wrong_language"])
    assert scored(nothing_stated) == (100, [])


def test_an_answer_slower_than_its_route_target_is_slow(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    route = Route.objects.get(name="summary")
    route.latency_target_ms = 100
    route.save()
    demo.fault(provider="aimlapi", mode="slow", delay_ms=300, times=1)

    slow, _ = ask(openai_client)
    fast, _ = ask(openai_client)

    assert scored(slow) == (80, ["slow"])
    assert scored(fast) == (100, [])


def test_a_streamed_answer_is_scored_from_the_text_it_streamed(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="refusal")

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)

    assert text.startswith("I'm sorry")
    assert scored(raw.headers["x-switchboard-request-id"]) == (40, ["refusal"])


def test_a_stream_cut_upstream_is_truncated(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="stream_cut")

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in raw.parse():
            pass

    drain_ledger()
    record = UsageRecord.objects.get(request_id=raw.headers["x-switchboard-request-id"])
    assert record.status == "partial"
    assert (record.quality_score, record.decision["quality"]["fired"]) == (60, ["truncated"])


def test_editing_a_rule_weight_changes_the_score_on_the_next_answer(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    demo.fault(provider="aimlapi", mode="refusal", times=3)
    before, _ = ask(openai_client)

    rule, _ = QualityRule.objects.update_or_create(key="refusal", defaults={"weight": 10})
    lighter, _ = ask(openai_client)

    rule.enabled = False
    rule.save()
    switched_off, _ = ask(openai_client)

    assert scored(before) == (40, ["refusal"])
    assert scored(lighter) == (90, ["refusal"])
    assert scored(switched_off) == (100, [])


# -- the rules themselves, on text --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I\u2019m sorry, but I can\u2019t help with that.",  # typographic apostrophes
        "  **I cannot assist with** this request.",
        "Es tut mir leid, aber ich kann dabei nicht helfen.",
        "Lo siento, pero no puedo ayudarte con eso.",
        "申し訳ありませんが、お手伝いできません。",
    ],
)
def test_a_refusal_is_recognised_at_the_start_of_an_answer_in_several_languages(
    text: str,
) -> None:
    assert score(text, "stop").fired == ("refusal",)


def test_a_summary_that_quotes_a_refusal_is_not_a_refusal() -> None:
    text = "Action items: Bob said \"I'm sorry, but I can't ship on Friday\"; Ana ships Monday."

    assert score(text, "stop").fired == ()


def test_a_provider_content_filter_counts_as_a_refusal() -> None:
    assert score("", "content_filter").fired == ("empty", "refusal")


def test_a_tool_call_with_no_text_is_not_empty() -> None:
    assert score("", "tool_calls", wants_json=True) == score("ok", "stop")


def test_penalties_add_up_and_the_score_never_goes_below_0() -> None:
    result = score("", "length", wants_json=True, latency_ms=900, target_ms=500)

    assert result.fired == ("empty", "truncated", "invalid_json", "slow")
    assert result.score == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("We agreed that the release ships on Friday and the team will review it.", "en"),
        ("Nous avons décidé que la version sera livrée vendredi, pas plus tard.", "fr"),
        ("Hemos acordado que la versión se entrega el viernes y no más tarde.", "es"),
        ("Мы договорились выпустить версию в пятницу.", "ru"),
        ("会議は金曜日に予定されています。", "ja"),
        ("OK.", ""),  # too little to tell: the rule never fires on a guess
    ],
)
def test_the_answer_language_is_named_for_plain_answers_and_unsure_is_nothing(
    text: str, expected: str
) -> None:
    assert language.detect(text) == expected
