"""The RoutingContext: what the client stated, normalised, and what its transcript shows."""

from __future__ import annotations

import openai
import pytest

from billing.models import UsageRecord
from routing.context import build, count_speakers, participant_band
from routing.schema import ChatRequest
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

TRANSCRIPT = """[00:00:03] Alice Moreau: Thanks for joining, everyone.
[00:00:07] Bob: Happy to be here. See https://example.com/agenda for the plan.
Summary: this line heads a section and names no one.
SPEAKER_3: Can we start with the numbers?
10:02 - Dr. Ng: Yes. Alice, go ahead.
Alice Moreau: Revenue is up four percent."""


def request(content: str = "Hello", **metadata: str) -> ChatRequest:
    return ChatRequest(
        model="summary", messages=[{"role": "user", "content": content}], metadata=metadata
    )


def test_speakers_are_counted_once_each_and_headings_and_urls_are_not_speakers() -> None:
    assert count_speakers(TRANSCRIPT) == 4


def test_text_without_speaker_labels_has_no_participants() -> None:
    context = build(request("Summarise the meeting about the budget."))
    assert context.participants is None
    assert context.participant_band == ""
    assert "participants" not in context.sources


def test_participants_stated_by_the_client_win_over_the_transcript() -> None:
    context = build(request(TRANSCRIPT, participants="12"))
    assert (context.participants, context.participant_band) == (12, "11+")
    assert context.sources["participants"] == "metadata"


def test_participants_are_counted_from_the_transcript_when_not_stated() -> None:
    context = build(request(TRANSCRIPT))
    assert (context.participants, context.participant_band) == (4, "3-5")
    assert context.sources["participants"] == "detected"


def test_stated_fields_are_normalised_and_fully_confident() -> None:
    context = build(request(meeting_type="Sales", industry="Health-Care", language="DE"))
    assert (context.meeting_type, context.industry, context.language) == (
        "sales",
        "health_care",
        "de",
    )
    assert context.meeting_type_confidence == context.language_confidence == 1.0
    assert context.transcript_chars == len("Hello")


@pytest.mark.parametrize(
    ("participants", "band"), [(1, "1-2"), (2, "1-2"), (3, "3-5"), (10, "6-10"), (11, "11+")]
)
def test_participant_bands(participants: int, band: str) -> None:
    assert participant_band(participants) == band


def test_every_usage_record_carries_the_context_it_was_routed_with(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    openai_client.chat.completions.create(
        model="summary",
        messages=[{"role": "user", "content": TRANSCRIPT}],
        metadata={"meeting_type": "executive"},
    )
    drain_ledger()
    context = UsageRecord.objects.get().decision["context"]
    assert context["meeting_type"] == "executive"
    assert context["participants"] == 4
    assert context["sources"] == {
        "meeting_type": "metadata",
        "participants": "detected",
        "language": "detected",
    }
    assert context["language"] == "en"


STANDUP_FR = """[09:30] Camille : Bonjour à tous. Hier j'ai terminé la page de paiement.
[09:30] Camille : Aujourd'hui j'écris les tests, pas de blocage.
[09:31] Hugo : Je suis toujours sur le bug d'export, je travaille en binôme avec Inès.
[09:31] Inès : Il me manque l'accès à la base de recette.
[09:32] Camille : Je m'en occupe après le point. À demain."""


def test_the_context_detected_from_a_transcript_is_on_its_usage_record(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    openai_client.chat.completions.create(
        model="summary",
        messages=[
            {"role": "system", "content": "Summarise the meeting for the team's wiki."},
            {"role": "user", "content": STANDUP_FR},
        ],
    )
    drain_ledger()
    context = UsageRecord.objects.get().decision["context"]
    assert (context["meeting_type"], context["language"], context["participants"]) == (
        "standup",
        "fr",
        3,
    )
    assert context["meeting_type_confidence"] > 0.5 and context["language_confidence"] > 0.5
    assert context["sources"] == {
        "meeting_type": "detected",
        "language": "detected",
        "participants": "detected",
    }


def test_one_labelled_instruction_is_no_transcript() -> None:
    context = build(request("Summarise: we agreed to ship on Friday."))
    assert context.participants is None
    assert count_speakers("Alice: hi\nBob: hello") == 2


def test_without_routing_rules_the_text_is_read_while_the_provider_works_and_still_recorded(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    from routing.models import RoutingRule

    RoutingRule.objects.all().delete()  # nothing routes on the context before the call
    openai_client.chat.completions.create(
        model="summary",
        messages=[{"role": "user", "content": STANDUP_FR}],
        extra_body={"metadata": {"industry": "retail"}},
    )

    drain_ledger()
    context = UsageRecord.objects.get().decision["context"]
    assert (context["meeting_type"], context["language"], context["participants"]) == (
        "standup",
        "fr",
        3,
    )
    assert context["industry"] == "retail" and context["transcript_chars"] > 0
