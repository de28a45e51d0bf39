#!/usr/bin/env python3
"""What context-aware routing adds to one request: a micro-benchmark, in process.

Measures, against a real Redis (``REDIS_URL``, default redis://127.0.0.1:6379/14),
on a route of four candidates with three rules in the table:

* ``rules``: `rules.choose` + `rules.apply` (pure CPU: match, filter, reorder, params);
* ``select``: `selection.plan`, `selection.read` and `selection.finish` (the one Redis
  read of the live numbers, quality and budget spend, the breakers' cached reading, the
  ranking), per strategy;
* ``rank``: `selection.order` and its explanation alone (CPU, the numbers given);
* ``commit+live``: what recording the live numbers adds to the ledger pipeline's
  breaker record (one script call for both, `Breakers.queue_record` ``with_live``).

    REDIS_URL=redis://127.0.0.1:6379/6 .venv/bin/python bench/routing_overhead.py

Prints the median and p95 in microseconds over ``--n`` requests each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("SWITCHBOARD_ENCRYPTION_KEYS", "bench-only-key-bench-only-key-0000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    import django

    django.setup()
    asyncio.run(run(args.n))


async def run(n: int) -> None:
    from redis.asyncio import Redis

    from billing.budgets import BudgetInfo
    from routing import live, rules, selection
    from routing.breaker import Breakers, Policy
    from routing.context import RoutingContext
    from routing.schema import ChatRequest
    from routing.table import DeploymentInfo, Resolution, RoutePolicy, RoutingTable

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
    redis = Redis.from_url(url)
    await redis.ping()

    def deployment(id: int, provider: str, price: str) -> DeploymentInfo:
        return DeploymentInfo(
            id=900_000 + id,
            provider=provider,
            protocol="openai",
            base_url="http://127.0.0.1:9",
            model="m",
            api_key="k",
            vendor="",
            input_usd_per_mtok=Decimal(price),
            output_usd_per_mtok=Decimal(price) * 4,
            cached_input_usd_per_mtok=None,
            context_window=128_000,
            max_output_tokens=None,
            connect_timeout=1,
            read_timeout=1,
            max_concurrency=8 if id == 1 else 0,
        )

    chain = tuple(
        deployment(i, p, price)
        for i, (p, price) in enumerate(
            [("aimlapi", "0.06"), ("openai", "0.15"), ("google", "0.1"), ("anthropic", "0.8")],
            start=1,
        )
    )
    rule_set = (
        rules.RuleInfo("executive", 10, meeting_types=frozenset({"executive"}), prefer=("openai",)),
        rules.RuleInfo(
            "large",
            20,
            participant_bands=frozenset({"6-10", "11+"}),
            max_tokens=400,
            max_tokens_per_participant=60,
            max_tokens_cap=2000,
        ),
        rules.RuleInfo("long", 30, min_transcript_chars=100_000, long_context_deployment="x/y"),
    )
    budget = BudgetInfo(1, "global monthly", "global", "", "monthly", Decimal(5000), True, 90)
    policy = Policy(5, 0.5, 20, 60, 30.0)

    class Engine:
        def __init__(self, strategy: str) -> None:
            self.redis = redis
            self.breakers = Breakers(redis, policy, extra_scripts=tuple(live.SCRIPTS.values()))
            self.table_ = RoutingTable(
                1,
                {},
                {},
                (budget,),
                policies={"summary": RoutePolicy(strategy)},
                rules=rule_set,
            )

    seeding = Breakers(redis, policy)
    await seeding.load_scripts()
    for d in chain:  # some live numbers to read
        await seeding.run(
            lambda pipe, d=d: seeding.queue_record(pipe, d.id, "ok", with_live=True, latency_ms=120)
        )
    messages = [{"role": "user", "content": "Alice: hi\nBob: hello\n" * 20}]
    context = RoutingContext(meeting_type="executive", participants=9, transcript_chars=400)
    report: dict[str, list[float]] = {}

    def timed(name: str, seconds: float) -> None:
        report.setdefault(name, []).append(seconds * 1e6)

    for _ in range(n):
        request = ChatRequest(model="summary", messages=messages)
        started = time.perf_counter()
        outcome, _ = rules.choose(rule_set, context, "summary")
        rules.apply(outcome, chain, request, context, {})
        timed("rules (choose + apply)", time.perf_counter() - started)

    # Interleaved, so that the shared machine's drift hits every step alike.
    now = datetime.now(UTC)
    engines = {strategy: Engine(strategy) for strategy in selection.STRATEGIES}
    await engines["ordered"].breakers.load_scripts()
    snapshot = live.parse(await engines["ordered"].breakers.evalsha(*live.read_args(chain)), chain)
    readings = await engines["ordered"].breakers.read([d.id for d in chain])
    request = ChatRequest(model="summary", messages=messages)
    for _ in range(n):
        started = time.perf_counter()
        await redis.ping()
        timed("baseline: one Redis round trip (PING)", time.perf_counter() - started)
        for strategy, engine in engines.items():
            started = time.perf_counter()
            planned = selection.plan(engine.table_, Resolution("summary", chain), "k", now)
            await selection.finish(engine, planned, await selection.read(engine, planned), request)
            timed(f"select, {strategy} (1 script call + rank)", time.perf_counter() - started)
            started = time.perf_counter()
            ranked = selection.order(
                chain, RoutePolicy(strategy), snapshot, readings, request, 30.0
            )
            ranked.explain()
            timed(f"rank only, {strategy} (CPU)", time.perf_counter() - started)
        for with_live in (False, True):
            pipe = redis.pipeline(transaction=False)
            pipe.rpush("bench:ledger", b"x" * 400)
            seeding.queue_record(pipe, chain[0].id, "ok", with_live=with_live, latency_ms=120)
            started = time.perf_counter()
            await pipe.execute()
            label = "ledger pipeline + breaker record" + (" with live" if with_live else "")
            timed(label, time.perf_counter() - started)
    await redis.delete("bench:ledger", *(live.KEY.format(d.id) for d in chain))
    await redis.aclose()

    print(f"{'step':<52} {'median µs':>10} {'p95 µs':>10}")
    for name, samples in report.items():
        samples.sort()
        p95 = samples[int(len(samples) * 0.95)]
        print(f"{name:<52} {statistics.median(samples):>10.1f} {p95:>10.1f}")


if __name__ == "__main__":
    main()
