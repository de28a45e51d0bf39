"""Micro-benchmark: what counting one request in the metrics costs (`routing.metrics.observe`).

    .venv/bin/python bench/metrics_observe.py                 # one process's registry
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python bench/metrics_observe.py

CPU time per call (time.process_time), the best of five rounds, so that other
processes on a busy machine do not count. A fallback answered after a retry (three
attempts), the common shape under a fault,
and a plain one-attempt answer. The request log line is switched off here: it is
measured apart (SWITCHBOARD_REQUEST_LOG).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django

django.setup()

from billing.ledger import UsageEntry  # noqa: E402
from routing import metrics  # noqa: E402


def attempt(provider: str, deployment_id: int, outcome: str) -> dict[str, object]:
    return {
        "provider": provider,
        "model": "gpt-4o-mini",
        "deployment_id": deployment_id,
        "outcome": outcome,
        "status": 200,
        "code": "",
        "message": "",
        "latency_ms": 312.5,
    }


def entry(attempts: list[dict[str, object]]) -> UsageEntry:
    return UsageEntry(
        request_id="bench",
        created=datetime.now(UTC),
        status="ok",
        route="summary",
        provider="openai",
        model="gpt-4o-mini",
        prompt_tokens=120,
        completion_tokens=48,
        cost_usd=Decimal("0.0000465000"),
        latency_ms=330,
        attempts=attempts,
    )


def per_call_us(sample: UsageEntry, n: int = 200_000) -> float:
    for _ in range(1000):
        metrics.observe(sample)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(n // 5):
            metrics.observe(sample)
        best = min(best, (time.process_time() - started) / (n // 5))
    return best * 1e6


def main() -> None:
    logging.getLogger("routing.requests").setLevel(logging.WARNING)
    mode = "multiprocess" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "single process"
    plain = entry([attempt("openai", 2, "ok")])
    fallback = entry(
        [
            attempt("aimlapi", 1, "transient"),
            attempt("aimlapi", 1, "transient"),
            attempt("openai", 2, "ok"),
        ]
    )
    print(
        f"{mode}: one attempt {per_call_us(plain):.2f} µs, "
        f"retry+fallback {per_call_us(fallback):.2f} µs"
    )

    logging.getLogger("routing.requests").setLevel(logging.INFO)
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    from project.logs import JsonFormatter, RedactSecrets, RequestIdFilter

    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers = [handler]
    print(f"{mode}: with the JSON request log line {per_call_us(plain, 50_000):.2f} µs")


if __name__ == "__main__":
    main()
