"""The meeting-type classifier's accuracy on the held-out examples (bench/RESULTS.md)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from routing.detection import dataset, meeting


class Command(BaseCommand):
    help = (
        "Evaluate the meeting-type classifier on the held-out part of the labelled set: "
        "accuracy per type and language, and the confusion matrix (Markdown)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        examples = dataset.load()
        model = meeting.ensure_trained()
        held_out = [e for e in examples if e.split == "test"]
        result = meeting.evaluate(model, held_out)
        out = self.stdout.write
        languages = Counter(e.language for e in examples)
        out(
            f"Labelled set: {len(examples)} examples in {len(languages)} languages "
            f"({', '.join(f'{lang} {n}' for lang, n in sorted(languages.items()))}); "
            f"trained on {model.trained_on}, held out {len(held_out)}.\n\n"
        )
        out(f"**Held-out accuracy: {result.accuracy:.1%}** ({result.total} examples)\n\n")
        out("| meeting type | held out | accuracy (recall) | precision |")
        out("|---|---:|---:|---:|")
        for label in result.labels:
            out(
                f"| {label} | {result.support(label)} | {result.recall(label):.1%} "
                f"| {result.precision(label):.1%} |"
            )
        out("\n| language | held out | accuracy |")
        out("|---|---:|---:|")
        for language, (right, total) in result.by_language.items():
            out(f"| {language} | {total} | {right / total:.1%} |")
        out("\nConfusion matrix (rows: true type, columns: predicted):\n\n")
        out("| true \\ predicted | " + " | ".join(result.labels) + " |")
        out("|---|" + "---:|" * len(result.labels))
        for label, row in zip(result.labels, result.confusion, strict=True):
            out(f"| **{label}** | " + " | ".join(str(n) for n in row) + " |")
        threshold = settings.SWITCHBOARD["MEETING_TYPE_MIN_CONFIDENCE"]
        confident = right_confident = 0
        buckets: dict[str, list[int]] = {}
        for example in held_out:
            guess, confidence = model.predict(example.text)
            bucket = f"{min(int(confidence * 10), 9) / 10:.1f}"
            hits = buckets.setdefault(bucket, [0, 0])
            hits[0] += guess == example.label
            hits[1] += 1
            if confidence >= threshold:
                confident += 1
                right_confident += guess == example.label
        out(
            f"\nCalibration (temperature {model.temperature:.3f}): held-out examples by "
            "confidence of the top type, and how often it was right:\n\n"
        )
        out("| confidence | examples | right |")
        out("|---|---:|---:|")
        for bucket in sorted(buckets):
            right, total = buckets[bucket]
            out(f"| {bucket}-{float(bucket) + 0.1:.1f} | {total} | {right / total:.0%} |")
        out(
            f"\nAt the threshold {threshold}: {confident} of {len(held_out)} held-out examples "
            f"are classified with confidence, {right_confident} of them rightly; the other "
            f"{len(held_out) - confident} are reported as 'other'."
        )
