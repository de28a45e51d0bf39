"""Which language an answer is in, cheaply, for the quality check "not the language asked for".

One function, `detect`, so that the lead can point the check at the context
engineer's detector (routing/detection/) on merge: it takes text and returns an
ISO 639-1 code, or "" when it cannot tell. This one reads the first
`SAMPLE_CHARS` characters: a script (Cyrillic, Han, Kana, Hangul, Arabic, ...)
settles it at once; Latin text is told apart by counting a few dozen of each
language's commonest short words. It is meant to catch an answer wholly in the
wrong language, never to judge a mixed one: unsure is "".
"""

from __future__ import annotations

import re
from collections import Counter

SAMPLE_CHARS = 500
# Fewer stop-word hits than this, or a runner-up this close, is "cannot tell".
MIN_HITS = 3
MIN_LEAD = 1.5

STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the and is are was were to of in that it for with on this be not you we they "
        "have has will would can our your from at by an or as",
        "de": "der die das und ist sind nicht ein eine zu mit auf den dem des für von sich "
        "auch wir sie ich es wird werden im bei oder aber dass",
        "fr": "le la les et est sont un une des du de pour pas que qui dans sur avec nous vous "
        "ils ce cette au aux il elle ne mais ou",
        "es": "el la los las y es son un una de del que en por para con no se lo su nosotros "
        "como pero más este esta al muy",
        "it": "il lo la gli le e è sono un una di del che per con non si nel della questo "
        "questa ma anche come siamo noi",
        "pt": "o a os as e é são um uma de do da que em para com não se no na por mais "
        "como mas nós este esta",
        "nl": "de het een en is zijn niet van te dat die in op met voor we wij ze ook maar "
        "als er dit bij",
    }.items()
}

# Scripts that name their language (or its nearest family member) by themselves.
SCRIPTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\u3040-\u30ff]"), "ja"),  # kana before Han: Japanese mixes both
    (re.compile(r"[\uac00-\ud7af]"), "ko"),
    (re.compile(r"[\u4e00-\u9fff]"), "zh"),
    (re.compile(r"[\u0400-\u04ff]"), "ru"),
    (re.compile(r"[\u0600-\u06ff]"), "ar"),
    (re.compile(r"[\u0590-\u05ff]"), "he"),
    (re.compile(r"[\u0370-\u03ff]"), "el"),
    (re.compile(r"[\u0900-\u097f]"), "hi"),
    (re.compile(r"[\u0e00-\u0e7f]"), "th"),
)
# Each stop word's languages: one dictionary lookup a word.
WORD_LANGUAGES: dict[str, tuple[str, ...]] = {}
for _lang, _words in STOP_WORDS.items():
    for _word in _words:
        WORD_LANGUAGES[_word] = (*WORD_LANGUAGES.get(_word, ()), _lang)
# A script's share of the letters above which it is the answer's script.
SCRIPT_SHARE = 0.3


def detect(text: str) -> str:
    """The language of ``text`` as an ISO 639-1 code, or "" when it cannot tell."""
    sample = text[:SAMPLE_CHARS]
    if not sample.isascii():
        letters = sum(1 for ch in sample if ch.isalpha())
        for pattern, lang in SCRIPTS:
            found = len(pattern.findall(sample))
            if found and found >= letters * SCRIPT_SHARE:
                return lang
    counts = dict.fromkeys(STOP_WORDS, 0)
    # Split on white space only: a stop word is seldom the one next to punctuation.
    # Counter (in C) folds repeated words, so the Python loop runs once per distinct word.
    for word, seen in Counter(sample.lower().split()).items():
        for lang in WORD_LANGUAGES.get(word, ()):
            counts[lang] += seen
    ranked = sorted(counts.items(), key=lambda item: item[1], reverse=True)
    (best, hits), (_, runner_up) = ranked[0], ranked[1]
    if hits < MIN_HITS or hits < runner_up * MIN_LEAD:
        return ""
    return best


def base_language(code: str) -> str:
    """ "en-US", "pt_BR", "EN" -> "en": what the check compares."""
    return re.split(r"[-_]", code.strip().lower(), maxsplit=1)[0]
