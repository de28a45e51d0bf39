"""Train the meeting-type classifier from routing/detection/data (run by `make install`)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.detection import dataset, meeting


class Command(BaseCommand):
    help = (
        "Train the meeting-type classifier on the labelled set and store it under var/. "
        "Does nothing when the stored one was trained on the current data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Train even if up to date.")
        parser.add_argument(
            "--resplit",
            action="store_true",
            help="Rewrite the data files' train/test split with the seeded stratified split "
            "(after adding examples).",
        )

    def handle(self, *args: Any, force: bool, resplit: bool, **options: Any) -> None:
        examples = dataset.load()
        if resplit:
            dataset.write(dataset.assign_splits(examples))
            examples = dataset.load()
        moved = dataset.check_splits(examples)
        if moved:
            raise CommandError(
                f"{len(moved)} examples are not in their seeded split (first: {moved[0]}); "
                "run with --resplit."
            )
        started = time.monotonic()
        path = meeting.artefact_path()
        stored = meeting.MeetingClassifier.load(path)
        if not force and stored is not None and stored.fresh(dataset.fingerprint(examples)):
            self.stdout.write(f"The meeting classifier at {path} is up to date.")
            return
        model = meeting.ensure_trained(path, force=True)
        self.stdout.write(
            f"Trained the meeting classifier on {model.trained_on} of {len(examples)} examples "
            f"({len(model.vocabulary)} features, temperature {model.temperature:.3f}) in "
            f"{time.monotonic() - started:.1f} s; stored at {path}."
        )
