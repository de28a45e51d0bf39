"""The labelled meeting excerpts the meeting-type classifier learns from.

Each ``data/*.jsonl`` line is one excerpt: ``{"text", "label", "language", "split"}``.
``split`` is "train" or "test"; the test part is held out from training and is what
the accuracy in bench/RESULTS.md (and the test that guards it) is measured on. The
split is fixed by `assign_splits` (seeded, stratified by label and language) and
stored in the files, so it stays put between runs; `check_splits` tells whether the
stored split is still the seeded one (`manage.py train_meeting_classifier --resplit`
rewrites it after examples are added).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED = 20261127
TEST_SHARE = 0.25
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    language: str
    split: str = "train"
    source: str = ""  # the file it came from, for messages; not stored


def load(directory: Path = DATA_DIR) -> list[Example]:
    """Every example of every ``*.jsonl`` file of ``directory``, in file and line order."""
    examples = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                examples.append(
                    Example(
                        text=row["text"],
                        label=row["label"],
                        language=row["language"],
                        split=row.get("split", "train"),
                        source=f"{path.name}:{number}",
                    )
                )
    return examples


def fingerprint(examples: Iterable[Example]) -> str:
    """A hash of the examples' content and split: a trained model is stale when it changes."""
    digest = hashlib.sha256()
    for example in examples:
        line = json.dumps([example.text, example.label, example.language, example.split])
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def assign_splits(
    examples: Sequence[Example], seed: int = SEED, test_share: float = TEST_SHARE
) -> list[Example]:
    """The examples with ``split`` set: ``test_share`` of each (label, language) group held out.

    Within a group the order is that of the text's hash, shuffled by ``seed``, so the split
    does not depend on the order of the files. A group of fewer than 4 is all training.
    """
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        groups[(example.label, example.language)].append(index)
    held_out: set[int] = set()
    for group, indexes in sorted(groups.items()):
        ordered = sorted(indexes, key=lambda i: hashlib.sha256(examples[i].text.encode()).digest())
        random.Random(f"{seed}:{group[0]}:{group[1]}").shuffle(ordered)
        count = round(len(ordered) * test_share) if len(ordered) >= 4 else 0
        held_out.update(ordered[:count])
    return [
        replace(example, split="test" if index in held_out else "train")
        for index, example in enumerate(examples)
    ]


def check_splits(examples: Sequence[Example]) -> list[str]:
    """Sources of examples whose stored split is not the seeded one."""
    expected = assign_splits(examples)
    return [e.source for e, x in zip(examples, expected, strict=True) if e.split != x.split]


def write(examples: Sequence[Example], directory: Path = DATA_DIR) -> None:
    """Rewrite the files the examples came from (their ``source``), one JSON object a line."""
    files: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        files[example.source.split(":")[0]].append(example)
    for name, rows in files.items():
        with (directory / name).open("w", encoding="utf-8") as out:
            for example in rows:
                row = asdict(example)
                del row["source"]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
