"""Automated quality scoring of an answer: a few cheap rules, no model call.

`score()` starts from 100 and takes off the weight of every rule that fires:

| rule | fires when |
|---|---|
| `empty` | the answer has no text (and called no tool) |
| `truncated` | it stopped at its token limit (finish reason `length`) or its stream was cut |
| `refusal` | it opens with a refusal ("I'm sorry, but I can't ..."), or a filter cut it |
| `invalid_json` | the request asked for JSON (`response_format`) and the answer does not parse |
| `wrong_language` | the request stated a language (metadata `language`); the answer is in another |
| `slow` | the answer took longer than its route's `latency_target_ms` |

Weights come from the `QualityRule` rows (admin, "Quality rules"), through the
routing table, so scoring reads no database; a rule switched off is not run.
The score is kept on the usage record (`quality_score`), and the rules that
fired in its `decision["quality"]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from routing.quality import language

EMPTY = "empty"
TRUNCATED = "truncated"
REFUSAL = "refusal"
INVALID_JSON = "invalid_json"
WRONG_LANGUAGE = "wrong_language"
SLOW = "slow"

# The weights a rule has until an admin changes it: what it takes off 100.
DEFAULT_WEIGHTS: dict[str, int] = {
    EMPTY: 100,
    TRUNCATED: 40,
    REFUSAL: 60,
    INVALID_JSON: 50,
    WRONG_LANGUAGE: 50,
    SLOW: 20,
}
RULE_TITLES: dict[str, str] = {
    EMPTY: "Empty answer",
    TRUNCATED: "Truncated answer (token limit, or stream cut)",
    REFUSAL: "Refusal",
    INVALID_JSON: "Invalid JSON when JSON was asked for",
    WRONG_LANGUAGE: "Not in the language asked for",
    SLOW: "Slower than the route's latency target",
}

# Openings of a refusal, lower case, straight apostrophes. Only the start of an
# answer is read: a summary that quotes someone refusing is not a refusal.
REFUSALS: tuple[str, ...] = (
    # English
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i'm sorry, i can't",
    "i'm sorry, i cannot",
    "sorry, i can't",
    "sorry, but i can't",
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i can't comply",
    "i cannot comply",
    "i'm unable to",
    "i am unable to",
    "i'm not able to help",
    "i won't be able to help",
    "as an ai language model, i can",
    "i apologize, but i can",
    "i apologise, but i can",
    # German
    "es tut mir leid, aber ich kann",
    "leider kann ich",
    "ich kann dabei nicht helfen",
    "ich kann ihnen dabei nicht helfen",
    "ich bin nicht in der lage",
    # French
    "je suis désolé, mais je ne peux",
    "désolé, je ne peux pas",
    "désolé, mais je ne peux",
    "je ne peux pas vous aider",
    "je ne suis pas en mesure",
    # Spanish
    "lo siento, pero no puedo",
    "lo siento, no puedo",
    "no puedo ayudarte con",
    "no puedo ayudar con",
    # Italian
    "mi dispiace, ma non posso",
    "mi dispiace, non posso",
    "non posso aiutarti",
    # Portuguese
    "desculpe, mas não posso",
    "sinto muito, mas não posso",
    "não posso ajudar com",
    # Dutch
    "het spijt me, maar ik kan",
    "sorry, ik kan",
    # Japanese, Chinese
    "申し訳ありませんが、",
    "申し訳ございませんが、",
    "抱歉\uff0c我无法",  # Chinese, with its full-width comma
    "抱歉\uff0c我不能",
    "对不起\uff0c我无法",
    "对不起\uff0c我不能",
)
REFUSAL_HEAD = 80  # characters read: longer than the longest opening
LEADING = " \t\r\n\"'*#>_`"

# Finish reasons, as the adapters normalise them to OpenAI's.
CUT = "cut"  # ours: a stream cut upstream after its first byte
TRUNCATING = frozenset({"length", CUT})
FILTERED = "content_filter"
TOOL_CALLS = frozenset({"tool_calls", "function_call"})


@dataclass(frozen=True)
class Scored:
    score: int  # 0-100
    fired: tuple[str, ...]  # the rules that fired, in table order

    def as_dict(self) -> dict[str, object]:
        return {"score": self.score, "fired": list(self.fired)}


def score(
    text: str,
    finish_reason: str | None,
    *,
    wants_json: bool = False,
    language_asked: str = "",
    latency_ms: int = 0,
    target_ms: int | None = None,
    weights: Mapping[str, int] = DEFAULT_WEIGHTS,
) -> Scored:
    """Score one answer; ``weights`` holds the enabled rules only."""
    fired = []
    blank = not text.strip()
    if EMPTY in weights and blank and finish_reason not in TOOL_CALLS:
        fired.append(EMPTY)
    if TRUNCATED in weights and finish_reason in TRUNCATING:
        fired.append(TRUNCATED)
    if REFUSAL in weights and (finish_reason == FILTERED or (not blank and refuses(text))):
        fired.append(REFUSAL)
    json_expected = wants_json and finish_reason not in TOOL_CALLS
    if INVALID_JSON in weights and json_expected and not parses(text):
        fired.append(INVALID_JSON)
    if WRONG_LANGUAGE in weights and language_asked and not blank:
        found = language.detect(text)
        if found and found != language.base_language(language_asked):
            fired.append(WRONG_LANGUAGE)
    if SLOW in weights and target_ms and latency_ms > target_ms:
        fired.append(SLOW)
    penalty = sum(weights[rule] for rule in fired)
    return Scored(max(0, min(100, 100 - penalty)), tuple(fired))


def refuses(text: str) -> bool:
    head = text[: REFUSAL_HEAD + 20].lstrip(LEADING).lower().replace("\u2019", "'")
    return head.startswith(REFUSALS)


def parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
