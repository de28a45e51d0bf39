"""`manage.py submit_batch FILE.jsonl --key-name NAME [--route R] [--wait]`.

Submits a batch as the API does (every line checked first, nothing stored if
one is bad), as the named client key. With `--wait` it follows the batch to
its end: a bar redrawn in place on a terminal, a line every few seconds
otherwise (a log, CI), both on stderr; the outcome goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    OutputWrapper,
)
from django.db.models import Q
from django.utils import timezone

from project.errors import ApiError
from routing.batches.actions import submit_batch
from routing.batches.checks import InvalidBatch, check_requests, parse_jsonl
from routing.models import Batch, BatchItem, ClientKey, hash_key

BAR_WIDTH = 30
# Without a terminal, one progress line at most this often (and the last one always).
LINE_EVERY_SECONDS = 5.0


class Command(BaseCommand):
    help = "Submit a JSONL file of chat requests as a batch, and optionally follow its progress."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="one chat request a line; '-' reads standard input")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--key-name", help="act as the newest active client key of this name")
        who.add_argument("--key", help="act as this client key (its raw value)")
        parser.add_argument(
            "--route", default="", help="send every request to this route, e.g. a cheaper one"
        )
        parser.add_argument(
            "--wait", action="store_true", help="show progress until the batch finishes"
        )
        parser.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        key = self.find_key(options["key_name"], options["key"])
        if not key.has_scope("batches"):
            raise CommandError(f"The key '{key.name}' lacks the 'batches' scope.")
        raw = self.read(options["file"])
        try:
            entries = check_requests(parse_jsonl(raw), key, options["route"])
        except InvalidBatch as invalid:
            lines = "\n".join(f"  line {e.line}: {e.message}" for e in invalid.errors[:20])
            raise CommandError(
                f"{len(invalid.errors)} line(s) are invalid; nothing was submitted.\n{lines}"
            ) from None
        except ApiError as error:
            raise CommandError(f"{error.message} Nothing was submitted.") from None
        batch = submit_batch(key, entries, options["route"])
        self.stdout.write(f"Submitted batch {batch.code}: {batch.total} requests.")
        if not options["wait"]:
            self.stdout.write(f"Follow it with GET /api/v1/batches/{batch.code}.")
            return
        bar = ProgressBar(self.stderr, batch.total)
        try:
            while True:
                batch.refresh_from_db()
                bar.show(Batch.objects.filter(pk=batch.pk).item_counts()[batch.pk])
                if batch.is_finished:
                    break
                time.sleep(options["interval"])
        except KeyboardInterrupt:
            bar.end()
            self.stdout.write(f"Stopped watching; batch {batch.code} goes on.")
            return
        bar.end()
        counts = Batch.objects.filter(pk=batch.pk).item_counts()[batch.pk]
        summary = ", ".join(f"{counts[status]} {status}" for status in BatchItem.SETTLED)
        self.stdout.write(f"Batch {batch.code} {batch.status}: {summary}.")
        if batch.error:
            self.stdout.write(batch.error)
        self.stdout.write(f"Results: GET /api/v1/batches/{batch.code}/results")

    def find_key(self, name: str | None, raw: str | None) -> ClientKey:
        live = ClientKey.objects.active().filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )
        if raw is not None:
            key = live.filter(key_hash=hash_key(raw.strip())).first()
            if key is None:
                raise CommandError("No active client key matches --key.")
            return key
        key = live.filter(name=name).order_by("-created").first()
        if key is None:
            raise CommandError(f"No active client key is named '{name}'.")
        return key

    def read(self, path: str) -> bytes:
        if path == "-":
            return sys.stdin.buffer.read()
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None


class ProgressBar:
    """A bar redrawn in place on a terminal; periodic plain lines anywhere else."""

    def __init__(self, out: TextIO | OutputWrapper, total: int) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty()
        self.last_line = ""
        self.last_written = 0.0

    def show(self, counts: dict[str, int]) -> None:
        line = self.render(counts)
        if line == self.last_line:
            return
        done = sum(counts[s] for s in BatchItem.SETTLED) == self.total
        now = time.monotonic()
        if self.tty:
            self.write(f"\r{line}\x1b[K")
        elif not self.last_line or done or now - self.last_written >= LINE_EVERY_SECONDS:
            self.write(f"{line}\n")
        else:
            return
        self.last_line, self.last_written = line, now

    def end(self) -> None:
        if self.tty and self.last_line:
            self.write("\n")

    def render(self, counts: dict[str, int]) -> str:
        done = sum(counts[s] for s in BatchItem.SETTLED)
        share = done / self.total if self.total else 1.0
        filled = round(BAR_WIDTH * share)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        width = len(str(self.total))
        states = "  ".join(
            f"{status} {counts[status]}" for status in ("answered", "failed", "cancelled")
        )
        return f"[{bar}] {done:>{width}}/{self.total} {100 * share:5.1f}%  {states}"

    def write(self, text: str) -> None:
        if isinstance(self.out, OutputWrapper):  # a command's stderr: no error colouring
            self.out.write(text, style_func=lambda s: s, ending="")
        else:
            self.out.write(text)
        self.out.flush()
