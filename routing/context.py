"""The RoutingContext: what a request is about, for rules, selection and the ledger.

Built once per request (step 3 of the request path), before the route is
resolved. Each field comes from the request's ``metadata`` (or an
``X-Switchboard-*`` header, which the gateway has already merged into it), and
where the client sent nothing, from what can be read off the request itself:

- ``participants``: the distinct speaker labels of a transcript
  (``Alice: ...``, ``[00:12] SPEAKER_2: ...``);
- ``meeting_type`` and ``language``: detected from the conversation by
  `routing.detection` when the client did not say.

``sources`` records where each field came from ("metadata", "detected",
"key"), so that a preview and a usage record can say why a rule matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
# words (a name, "SPEAKER_2", "Dr. Ng") and a colon. A URL's "https:" is not one.
SPEAKER = re.compile(
    r"^[ \t]*(?:[\[(]?\d{1,2}:\d{2}(?::\d{2})?[\])]?[ \t]*[-\u2013]?[ \t]*)?"
    r"(?P<name>[^\W\d][\w.'\u2019\-]*(?:[ \t][\w.'\u2019\-]+){0,3})[ \t]*:(?!//)",
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
# How much of a conversation detection reads: beyond this, more text changes nothing.
DETECTION_CHARS = 4000


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


def build(request: ChatRequest, key: KeyInfo | None = None) -> RoutingContext:
    """The context of one request: what its client stated, then what its text shows."""
    context = from_metadata(request.metadata, key.name if key is not None else "")
    text = conversation_text(request.messages)
    context.transcript_chars = len(text)
    if context.participants is None:
        speakers = count_speakers(text)
        if speakers:
            context.participants = speakers
            context.sources["participants"] = "detected"
    return context


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
        if name != "language":
            value = value.replace(" ", "_").replace("-", "_")
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


def count_speakers(text: str) -> int:
    """Distinct speaker labels at the start of lines; 0 when the text is no transcript."""
    names = set()
    for match in SPEAKER.finditer(text):
        name = match.group("name").strip().lower()
        if name not in NOT_SPEAKERS:
            names.add(name)
    return len(names)
