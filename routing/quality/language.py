"""Which language an answer is in, for the quality check "not the language asked for".

It asks the same detector that detects a request's language (`routing.detection.language`,
fastText's model shipped in its wheel), on the first `SAMPLE_CHARS` characters of the
answer. It is meant to catch an answer wholly in the wrong language, never to judge a
mixed or a very short one: below `MIN_PROBABILITY`, or under `MIN_LETTERS` letters, it
cannot tell, and the rule does not fire on a guess.
"""

from __future__ import annotations

import re

from routing.detection import language

SAMPLE_CHARS = 200
MIN_LETTERS = 12
MIN_PROBABILITY = 0.6


def detect(text: str) -> str:
    """The language of ``text`` as an ISO 639-1 code, or "" when it cannot tell."""
    sample = text[:SAMPLE_CHARS]
    if sum(1 for ch in sample if ch.isalpha()) < MIN_LETTERS:
        return ""
    code, probability = language.detect(sample)
    return code if probability >= MIN_PROBABILITY else ""


def base_language(code: str) -> str:
    """ "en-US", "pt_BR", "EN" -> "en": what the check compares."""
    return re.split(r"[-_]", code.strip().lower(), maxsplit=1)[0]
