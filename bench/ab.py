#!/usr/bin/env python3
"""Paired A/B of code variants: one gateway process per variant, interleaved rounds.

Each variant is a directory holding a copy of the tree (``git archive <rev> | tar -x
-C DIR``); every gateway runs this checkout's virtualenv with its variant's directory
as the working directory (so its code is imported), against one simulator, one SQLite
database and one Redis, with the production features on (``--bare``: without the key's
limits and the budget). Each round runs c1 (3 s), c16 (4 s) and the TTFT probe (2 s)
for ``direct`` and every variant, in an order that rotates; it prints the medians of the
paired differences. bench/RESULTS.md's table of hot-path changes came from this.

    .venv/bin/python bench/ab.py base=/tmp/ab/base new=/tmp/ab/new --rounds 3
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench


def variant_command(directory: Path, port: int) -> list[str]:
    """How the variant's own code starts a gateway (its project/serving.py): the server
    options are part of what an A/B compares."""
    serving = runpy.run_path(str(directory / "project" / "serving.py"))
    return serving["uvicorn_command"](str(bench.PY), port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="name=directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument(
        "--upstream",
        choices=("simulator", "peer"),
        default="simulator",
        help="what the gateways call: the project's simulator (default), or the peer "
        "benchmark's fake upstream (../shared/peer-bench/fake_upstream.py), lighter, as "
        "run_peers.sh measures against (the correctness gate then checks one completion)",
    )
    parser.add_argument("--redis-url", default=bench.MACHINE_REDIS)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="set up, print each gateway's URL and pid, and serve until interrupted "
        "(for profiling: wrk and py-spy against a standing gateway)",
    )
    args = parser.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variants]
    run_dir = Path(f"/tmp/switchboard-bench/ab-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "raw").mkdir()
    procs = bench.Processes()
    redis = bench.RedisHandle(run_dir, args.redis_url)
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DJANGO_SETTINGS_MODULE" and "proxy" not in k.lower()
    }
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{run_dir / 'db.sqlite3'}",
            "REDIS_URL": redis.url,
            "SWITCHBOARD_BENCH_UPSTREAM_KEY": bench.UPSTREAM_KEY,
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "SWITCHBOARD_CACHE_ENABLED": "false",
            "SWITCHBOARD_SINGLE_FLIGHT_ENABLED": "false",
        }
    )
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    try:
        port = bench.free_port()
        simulator = f"http://127.0.0.1:{port}"
        if args.upstream == "peer":
            fake = (
                Path(__file__).resolve().parents[2] / "shared" / "peer-bench" / "fake_upstream.py"
            )
            command = [bench.PY, str(fake), "--port", str(port)]
            base, health = f"{simulator}/v1", f"{simulator}/health"
        else:
            command = [bench.PY, "-m", "routing.simulator", "--port", str(port)]
            base, health = f"{simulator}/openai/v1", f"{simulator}/healthz"
        sim = procs.start("upstream", command, env, run_dir / "logs" / "upstream.log")
        bench.wait_http(health, procs)
        key = bench.setup_gateway_db(run_dir, env, base, production=not args.bare)
        auth = {"Authorization": f"Bearer {key}"}
        upstream = {"Authorization": f"Bearer {bench.UPSTREAM_KEY}"}
        targets = [bench.Target("direct", f"{base}/chat/completions", upstream, None)]
        for name, directory in variants:
            gateway_port = bench.free_port()
            log = (run_dir / "logs" / f"{name}.log").open("wb")
            proc = subprocess.Popen(
                variant_command(Path(directory), gateway_port),
                cwd=directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs.items.append((name, proc, log))
            url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
            targets.append(bench.Target(name, url, auth, proc.pid))
        for target in targets[1:]:
            bench.wait_http(target.url.replace("/chat/completions", "/models"), procs, auth)
            if args.upstream == "peer":  # no faults to inject: one completion must work
                status, _, _ = bench.post(target.url, target.headers, bench.BODY)
                target.checks.append(("completion", status == 200, f"HTTP {status}"))
            else:
                bench.check_gateway(target, simulator, redis, not args.bare)
            if not target.correct:
                raise RuntimeError(f"{target.name} failed the correctness gate: {target.checks}")
        if args.serve:
            print(f"simulator pid {sim.pid}; wrk script {bench.LUA}", flush=True)
            for target in targets:
                print(f"{target.name} {target.url} pid {target.pid} {target.headers}", flush=True)
            while True:
                time.sleep(3600)
        for target in targets:
            bench.run_wrk(target, 16, 2, False, run_dir / "raw" / "warm", sim.pid)
        for r in range(args.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for target in order:
                c1 = bench.run_wrk(target, 1, 3, False, run_dir / "raw" / "c1", sim.pid)
                c16 = bench.run_wrk(target, 16, 4, False, run_dir / "raw" / "c16", sim.pid)
                ttft = bench.ttfb_probe(target, 2)
                results.setdefault(target.name, []).append(
                    (c1["p50"], c16["rps"], c16["cpu_ms"] or 0.0, ttft["p50"])
                )
            load = Path("/proc/loadavg").read_text().split()[0]
            c1s = "  ".join(f"{t.name} {results[t.name][-1][0]:.3f}" for t in targets)
            print(f"round {r + 1} done, load average {load}; c1 p50 ms: {c1s}", flush=True)
        direct = results["direct"]
        for name, _ in variants:
            rows = results[name]
            added = statistics.median(g[0] - d[0] for g, d in zip(rows, direct, strict=True))
            added_ttft = statistics.median(g[3] - d[3] for g, d in zip(rows, direct, strict=True))
            print(
                f"{name:12} added p50 c1 {added:+.3f} ms  RPS c16 "
                f"{statistics.median(g[1] for g in rows):6.0f}  CPU ms/req c16 "
                f"{statistics.median(g[2] for g in rows):.3f}  added TTFT {added_ttft:+.3f} ms"
            )
        return 0
    finally:
        procs.stop_all()
        redis.cleanup()


if __name__ == "__main__":
    sys.exit(main())
