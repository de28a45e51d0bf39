"""The RoutingContext: what a request is about, for rules, selection and the ledger.

Built once per request (step 3 of the request path), before the route is
resolved. Each field comes from the request's ``metadata`` (or an
``X-Switchboard-*`` header, which the gateway has already merged into it), and
where the client sent nothing, from what can be read off the request itself:

- ``participants``: the distinct speaker labels of a transcript
  (``Alice: ...``, ``[00:12] SPEAKER_2: ...``);
- ``meeting_type`` and ``language``: detected from the conversation by
  `routing.detection` when the client did not say (`detect`);
- ``industry``: the client key's organisation's, when the client did not say.

``sources`` records where each field came from ("metadata", "detected",
"key"), so that a preview and a usage record can say why a rule matched.

A meeting type the classifier is less sure of than
``SWITCHBOARD_MEETING_TYPE_MIN_CONFIDENCE`` is reported as "other", keeping the
classifier's (low) confidence: "other" with a high confidence means "none of the
five", with a low one "not sure". Rules that need certainty compare the confidence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from routing.schema import ChatRequest
    from routing.table import KeyInfo

MEETING_TYPES = ("interview", "sales", "executive", "standup", "support", "other")

# (lowest, highest or None, label): the participant bands rules may name.
PARTICIPANT_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (1, 2, "1-2"),
    (3, 5, "3-5"),
    (6, 10, "6-10"),
    (11, None, "11+"),
)

# A speaker label at the start of a line: an optional timestamp, then one to four
# words (a name, "SPEAKER_2", "Dr. Ng"), an optional role in brackets ("Maya (Acme)",
# counted as Maya) and a colon. A URL's "https:" is not one.
SPEAKER = re.compile(
    r"^[ \t]*(?:[\[(]?\d{1,2}:\d{2}(?::\d{2})?[\])]?[ \t]*[-\u2013]?[ \t]*)?"
    r"(?P<name>[^\W\d][\w.'\u2019\-]*(?:[ \t][\w.'\u2019\-]+){0,3})"
    r"(?:[ \t]*\([^()\n]{1,40}\))?[ \t]*:(?!//)",
    re.MULTILINE,
)
# Labels that head a section rather than name a speaker.
NOT_SPEAKERS = frozenset(
    {
        "note",
        "notes",
        "summary",
        "agenda",
        "action items",
        "actions",
        "transcript",
        "meeting",
        "date",
        "time",
        "subject",
        "title",
        "attendees",
        "participants",
        "context",
        "question",
        "answer",
        "instructions",
        "output",
        "input",
        "example",
        "task",
    }
)
# Labelled lines a text needs before its labels are counted as speakers.
MIN_TURNS = 2
# How much of a conversation detection reads: beyond this, more text changes nothing.
DETECTION_CHARS = 4000
# Of which the meeting-type classifier reads the first 2,000 characters (20 to 30 lines:
# the greetings, the first round, "thanks for calling"), where a meeting shows its type
# (the labelled excerpts are all shorter), and language identification the first 500.
# Each costs time in proportion to what it reads: bench/context.py.
MEETING_CHARS = 2000
LANGUAGE_CHARS = 500
# Below this, a conversation is a question, not a meeting: no meeting type is guessed.
MIN_MEETING_CHARS = 60

# What clients call the six meeting types ("Sales call", "daily-standup" are normalised
# to sales_call and daily_standup first). A stated type not here is "other".
MEETING_TYPE_SYNONYMS = {
    "interview": "interview",
    "job_interview": "interview",
    "candidate_interview": "interview",
    "hiring_interview": "interview",
    "screening": "interview",
    "phone_screen": "interview",
    "recruiting": "interview",
    "hiring": "interview",
    "sales": "sales",
    "sales_call": "sales",
    "sales_meeting": "sales",
    "discovery_call": "sales",
    "demo": "sales",
    "sales_demo": "sales",
    "prospect_call": "sales",
    "negotiation": "sales",
    "renewal": "sales",
    "executive": "executive",
    "executive_meeting": "executive",
    "exec": "executive",
    "leadership": "executive",
    "leadership_meeting": "executive",
    "board": "executive",
    "board_meeting": "executive",
    "management_meeting": "executive",
    "standup": "standup",
    "stand_up": "standup",
    "daily_standup": "standup",
    "daily_stand_up": "standup",
    "daily": "standup",
    "daily_scrum": "standup",
    "scrum": "standup",
    "huddle": "standup",
    "support": "support",
    "support_call": "support",
    "customer_support": "support",
    "customer_service": "support",
    "helpdesk": "support",
    "help_desk": "support",
    "troubleshooting": "support",
    "other": "other",
}


@dataclass
class RoutingContext:
    use_case: str = ""
    meeting_type: str = ""
    meeting_type_confidence: float = 0.0
    industry: str = ""
    language: str = ""
    language_confidence: float = 0.0
    participants: int | None = None
    transcript_chars: int = 0
    client_key: str = ""  # the client key's name, for rules that name a key
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def participant_band(self) -> str:
        return participant_band(self.participants)

    def as_dict(self) -> dict[str, Any]:
        """The context as the preview and the usage record show it."""
        return {
            "use_case": self.use_case,
            "meeting_type": self.meeting_type,
            "meeting_type_confidence": round(self.meeting_type_confidence, 3),
            "industry": self.industry,
            "language": self.language,
            "language_confidence": round(self.language_confidence, 3),
            "participants": self.participants,
            "participant_band": self.participant_band,
            "transcript_chars": self.transcript_chars,
            "client_key": self.client_key,
            "sources": dict(self.sources),
        }


def build(
    request: ChatRequest, key: KeyInfo | None = None, read_text: bool = True
) -> RoutingContext:
    """The context of one request: what its client stated, its key's organisation, then
    (``read_text``) what its text shows (`read_text_of`)."""
    context = from_metadata(request.metadata, key.name if key is not None else "")
    if not context.industry and key is not None and key.industry:
        context.industry = key.industry
        context.sources["industry"] = "key"
    if read_text:
        read_text_of(context, request, key)
    return context


def read_text_of(context: RoutingContext, request: ChatRequest, key: KeyInfo | None) -> None:
    """Fill in what the request's text shows: its size, its speakers, and its meeting type
    and language unless the client stated them. The engine runs this while the provider
    works on the request when no routing rule needs the context first (perf, issue 9)."""
    text = conversation_text(request.messages)
    context.transcript_chars = len(text)
    if context.participants is None:
        speakers = count_speakers(text)
        if speakers:
            context.participants = speakers
            context.sources["participants"] = "detected"
    if not (context.meeting_type and context.language):
        served = key.languages if key is not None and key.languages else None
        detect(context, transcript_text(request.messages), served)


def detect(context: RoutingContext, text: str, served: Sequence[str] | None = None) -> None:
    """Fill the meeting type and language the client did not state, from ``text``.

    ``served``: the languages the customer serves; None is ``SWITCHBOARD_LANGUAGES``.
    """
    from routing.detection import language, meeting

    text = text[:DETECTION_CHARS]
    if not context.meeting_type and len(text.strip()) >= MIN_MEETING_CHARS:
        found, confidence = meeting.classifier().predict(text[:MEETING_CHARS])
        if confidence < settings.SWITCHBOARD["MEETING_TYPE_MIN_CONFIDENCE"]:
            found = "other"
        context.meeting_type, context.meeting_type_confidence = found, confidence
        context.sources["meeting_type"] = "detected"
    if not context.language:
        if served is None:
            served = settings.SWITCHBOARD["LANGUAGES"]
        code, confidence = language.detect(text[:LANGUAGE_CHARS], served)
        if code:
            context.language, context.language_confidence = code, confidence
            context.sources["language"] = "detected"


def warm() -> None:
    """Load the detectors now (gateway startup), so that no request waits for them."""
    from routing.detection import language, meeting

    meeting.classifier()
    language.detector()


def participant_band(participants: int | None) -> str:
    if participants is None or participants < 1:
        return ""
    for lowest, highest, label in PARTICIPANT_BANDS:
        if participants >= lowest and (highest is None or participants <= highest):
            return label
    return ""


def from_metadata(metadata: Mapping[str, str], client_key: str = "") -> RoutingContext:
    """The fields the client stated, normalised; nothing detected yet."""
    context = RoutingContext(client_key=client_key)
    for name in ("use_case", "meeting_type", "industry", "language"):
        value = metadata.get(name, "").strip().lower()
        if name == "language":
            value = re.split(r"[-_]", value)[0]  # "pt-BR" is Portuguese
        else:
            value = value.replace(" ", "_").replace("-", "_")
        if name == "meeting_type" and value:
            value = MEETING_TYPE_SYNONYMS.get(value, "other")
        if value:
            setattr(context, name, value)
            context.sources[name] = "metadata"
    if context.meeting_type:
        context.meeting_type_confidence = 1.0
    if context.language:
        context.language_confidence = 1.0
    stated = metadata.get("participants", "").strip()
    if stated.isdigit() and int(stated) > 0:
        context.participants = int(stated)
        context.sources["participants"] = "metadata"
    return context


def conversation_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the user and system turns: what a transcript arrives in."""
    parts = []
    for message in messages:
        if message.get("role") not in ("user", "system", "developer"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return "\n".join(parts)


def transcript_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text detection reads: the user turns, where a transcript is; the system and
    developer turns (instructions, often in English whatever the meeting's language)
    only when there is no user turn."""
    users = [m for m in messages if m.get("role") == "user"]
    return conversation_text(users) if users else conversation_text(messages)


def count_speakers(text: str) -> int:
    """Distinct speaker labels at the start of lines; 0 when the text is no transcript.

    A transcript has turns: one labelled line alone ("Summarise: ...") is an
    instruction, not a meeting of one.
    """
    names = set()
    turns = 0
    for match in SPEAKER.finditer(text):
        name = match.group("name").strip().lower()
        if name not in NOT_SPEAKERS:
            names.add(name)
            turns += 1
    return len(names) if turns >= MIN_TURNS else 0
