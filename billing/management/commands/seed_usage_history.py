"""`seed_usage_history`: a month of believable demo traffic in the ledger, for the dashboard.

Deterministic (a fixed random seed): a contact-center workload on four routes,
busy on weekdays and quiet at weekends, growing a little every day, mostly
answered by AIMLAPI with the odd fallback down the demo's chain. Every cost is
the row's tokens at the demo's prices (routing/demo/demo.yaml), so the savings
report and the forecast read it like real traffic.

Rows are heavier than real requests. The traffic that spends 70% of the demo's
$5,000 budget on these prices is some 70,000 requests a day; writing two million
rows would make `make run` take minutes. So the command writes
``--requests-per-day`` rows and scales every row's token counts by one factor
until the history spends ``--monthly-usd`` a month: the shape of the traffic is
real, the counts per row are not (pass a larger ``--requests-per-day`` for rows
closer to real ones).

Its rows have request ids starting "demo-"; a rerun replaces them, so history
always ends now and nothing is counted twice.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from billing.models import UsageRecord
from billing.money import token_cost

PREFIX = "demo-"
SEED = 5000
DAYS = 30
REQUESTS_PER_DAY = 800  # about 18,000 rows: a few seconds of `make run` on SQLite
MONTHLY_USD = Decimal(3100)  # forecasts land at 60-80% of the demo's $5,000 budget


@dataclass(frozen=True)
class Deployment:
    provider: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    direct_input_per_mtok: Decimal  # the model's original vendor's list price
    direct_output_per_mtok: Decimal


def deployment(provider: str, model: str, *prices: str) -> Deployment:
    return Deployment(provider, model, *(Decimal(price) for price in prices))


# The demo's fallback chain in order, at the demo's prices; a direct vendor charges list price.
CHAIN = [
    deployment("aimlapi", "gpt-4o-mini", "0.06", "0.24", "0.15", "0.60"),
    deployment("openai", "gpt-4o-mini", "0.15", "0.60", "0.15", "0.60"),
    deployment("google", "gemini-2.0-flash", "0.10", "0.40", "0.10", "0.40"),
    deployment("anthropic", "claude-3-5-haiku-latest", "0.80", "4.00", "0.80", "4.00"),
]
# Per 1,000 requests: how far down the chain the answer came from; the last is "nobody".
ANSWERED_AT = [900, 55, 30, 12, 3]

# route: (share of requests, client key, prompt tokens, completion tokens) of a real request.
ROUTES: dict[str, tuple[int, str, tuple[int, int], tuple[int, int]]] = {
    "summary": (35, "contact-center", (6_000, 30_000), (300, 900)),
    "action-items": (20, "contact-center", (6_000, 30_000), (150, 500)),
    "sentiment": (25, "crm-sync", (1_500, 8_000), (10, 60)),
    "live-assist": (20, "agent-desktop", (10_000, 60_000), (80, 400)),
}
# Requests per UTC hour, relative: the customer's agents work European and US hours.
HOURS = [1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 10, 9, 10, 10, 10, 10, 9, 8, 6, 5, 4, 3, 2, 1]
WEEKEND = 0.45
GROWTH_PER_DAY = 1.007


@dataclass
class Draft:
    """A request before its tokens are scaled: what answered, and its real-sized tokens."""

    created: datetime
    route: str
    key: str
    answered_at: int  # index into CHAIN, or len(CHAIN) when every provider failed
    prompt_tokens: int
    completion_tokens: int
    failures: list[tuple[int, str]]  # (http status, code) per provider that failed first


def drafts(rng: random.Random, now: datetime, days: int, per_day: int) -> list[Draft]:
    """Requests from midnight ``days - 1`` days ago until ``now``, oldest first."""
    today = datetime.combine(now.date(), time.min, tzinfo=UTC)
    routes = list(ROUTES)
    shares = [ROUTES[r][0] for r in routes]
    made = []
    for back in range(days - 1, -1, -1):
        midnight = today - timedelta(days=back)
        volume = per_day * GROWTH_PER_DAY**-back * rng.uniform(0.92, 1.08)
        if midnight.weekday() >= 5:
            volume *= WEEKEND
        for _ in range(round(volume)):
            hour = rng.choices(range(24), HOURS)[0]
            created = midnight + timedelta(hours=hour, seconds=rng.randrange(3600))
            if created >= now:
                continue  # today is only history up to now
            route = rng.choices(routes, shares)[0]
            _, key, prompt, completion = ROUTES[route]
            at = rng.choices(range(len(ANSWERED_AT)), ANSWERED_AT)[0]
            failures = [
                rng.choice([(503, "upstream_error"), (429, "rate_limited")]) for _ in range(at)
            ]
            made.append(
                Draft(
                    created=created,
                    route=route,
                    key=key,
                    answered_at=at,
                    prompt_tokens=rng.randint(*prompt),
                    completion_tokens=rng.randint(*completion),
                    failures=failures,
                )
            )
    made.sort(key=lambda d: d.created)
    return made


def real_cost(draft: Draft) -> Decimal:
    if draft.answered_at == len(CHAIN):
        return Decimal(0)
    d = CHAIN[draft.answered_at]
    return token_cost(
        draft.prompt_tokens, draft.completion_tokens, d.input_per_mtok, d.output_per_mtok
    )


def record(rng: random.Random, n: int, draft: Draft, scale: Decimal) -> UsageRecord:
    """The ledger row of a draft, its tokens scaled and its costs at the demo's prices."""
    attempts: list[dict[str, Any]] = []
    for (status, code), d in zip(draft.failures, CHAIN, strict=False):
        attempts.append(attempt(d, "transient", status, code, rng.randint(80, 900)))
    fields: dict[str, Any] = {
        "status": "error",
        "http_status": 503,
        "error_code": "all_providers_failed",
    }
    if draft.answered_at < len(CHAIN):
        d = CHAIN[draft.answered_at]
        prompt = int(draft.prompt_tokens * scale)
        completion = int(draft.completion_tokens * scale)
        latency = 350 + draft.completion_tokens * rng.randint(8, 14)
        attempts.append(attempt(d, "ok", 200, "", latency))
        fields = {
            "status": "ok",
            "provider": d.provider,
            "model": d.model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": token_cost(prompt, completion, d.input_per_mtok, d.output_per_mtok),
            "direct_cost_usd": token_cost(
                prompt, completion, d.direct_input_per_mtok, d.direct_output_per_mtok
            ),
        }
    return UsageRecord(
        request_id=f"{PREFIX}{draft.created:%Y%m%d}-{n:06d}",
        created=draft.created,
        client_key_name=draft.key,
        route=draft.route,
        latency_ms=sum(a["latency_ms"] for a in attempts),
        attempts=attempts,
        # Says on the row itself why its token counts are larger than any real request's.
        context={"seeded_by": "seed_usage_history", "token_scale": f"{scale:.1f}"},
        code=uuid.UUID(int=rng.getrandbits(128), version=4),
        **fields,
    )


def attempt(d: Deployment, outcome: str, status: int, code: str, latency_ms: int) -> dict[str, Any]:
    # The shape routing's Attempt.as_dict() writes; demo rows have no deployment row.
    return {
        "provider": d.provider,
        "model": d.model,
        "deployment_id": None,
        "outcome": outcome,
        "status": status,
        "code": code,
        "message": "" if outcome == "ok" else f"HTTP {status} from {d.provider}",
        "latency_ms": latency_ms,
    }


def history(
    now: datetime, days: int, per_day: int, monthly_usd: Decimal, seed: int = SEED
) -> list[UsageRecord]:
    rng = random.Random(seed)
    made = drafts(rng, now, days, per_day)
    real = sum((real_cost(d) for d in made), Decimal(0))
    span = Decimal((now - made[0].created).total_seconds()) / 86400 if made else Decimal(0)
    # One factor for every row, so the pattern survives and the total meets the target.
    scale = monthly_usd * span / 30 / real if real else Decimal(1)
    return [record(rng, n, draft, scale) for n, draft in enumerate(made)]


class Command(BaseCommand):
    help = (
        "Write about a month of demo usage history to the ledger (request ids 'demo-...'), "
        "replacing the previous demo history."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=DAYS)
        parser.add_argument(
            "--requests-per-day",
            type=int,
            default=REQUESTS_PER_DAY,
            help="Rows on a weekday at the end of the history.",
        )
        parser.add_argument(
            "--monthly-usd",
            type=Decimal,
            default=MONTHLY_USD,
            help="What the history spends per 30 days; token counts are scaled to meet it.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            # It deletes ledger rows: never where the ledger is real.
            raise CommandError("Demo history is for development machines.")
        rows = history(
            timezone.now(), options["days"], options["requests_per_day"], options["monthly_usd"]
        )
        with transaction.atomic():
            replaced, _ = UsageRecord.objects.filter(request_id__startswith=PREFIX).delete()
            UsageRecord.objects.bulk_create(rows, batch_size=1000)
        spent = sum((r.cost_usd for r in rows), Decimal(0))
        self.stdout.write(
            f"Demo usage history: {len(rows)} requests over {options['days']} days, "
            f"${spent:.2f} (replaced {replaced} earlier demo rows)."
        )
