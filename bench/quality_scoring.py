"""What automated quality scoring costs per answer: `python bench/quality_scoring.py`.

Scores a 2,000-token answer (8,000 characters) with each rule set the gateway
runs, many times, and prints microseconds per call (the median of 7 runs).
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from routing.quality.scoring import score

SENTENCE = "We agreed to ship the release on Friday after the final review with the whole team. "
ANSWER = (SENTENCE * (8000 // len(SENTENCE) + 1))[:8000]  # about 2,000 tokens
AS_JSON = orjson.dumps({"answer": ANSWER[:7980]}).decode()

CASES: dict[str, Callable[[], object]] = {
    "plain answer (no language stated, no JSON)": lambda: score(ANSWER, "stop"),
    "with a latency target": lambda: score(ANSWER, "stop", latency_ms=900, target_ms=500),
    "JSON asked for": lambda: score(AS_JSON, "stop", wants_json=True),
    "language stated (en)": lambda: score(ANSWER, "stop", language_asked="en"),
    "everything: JSON, language, target": lambda: score(
        AS_JSON, "stop", wants_json=True, language_asked="de", latency_ms=100, target_ms=500
    ),
}


def main() -> None:
    number = 5000
    for name, call in CASES.items():
        runs = timeit.repeat(call, number=number, repeat=7)
        print(f"{statistics.median(runs) / number * 1e6:8.1f} µs  {name}")


if __name__ == "__main__":
    main()
