"""Real servers for tests: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import uvicorn

# Bypass any proxy from the environment: every server here is local.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class RunningServer:
    url: str
    stop: Callable[[], None]


def start_server(app: Any, **config: Any) -> RunningServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = {"log_config": None, "log_level": "warning", "access_log": False, "lifespan": "on"}
    settings.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{app!r} did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return RunningServer(f"http://127.0.0.1:{port}", stop)


@dataclass(frozen=True)
class SimulatorHandle:
    url: str

    def control(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else orjson.dumps(payload)
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        with _opener.open(request, timeout=5) as response:
            return orjson.loads(response.read())

    def fault(self, **spec: Any) -> dict[str, Any]:
        return self.control("POST", "/_control/faults", spec)

    def clear(self) -> None:
        self.control("DELETE", "/_control/faults")
        self.control("DELETE", "/_control/calls")

    def calls(self) -> dict[str, Any]:
        return self.control("GET", "/_control/calls")

    def count(self, provider: str) -> int:
        return int(self.calls().get(provider, {}).get("count", 0))


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway_processes(
    count: int,
    env: dict[str, str],
    flags: tuple[str, ...] = ("--log-level", "warning"),
    output: Any = None,
) -> list[tuple[str, Any]]:
    """``count`` separate uvicorn processes of the gateway; returns (url, process) pairs.

    ``flags`` go to uvicorn; ``output``, an open file, takes what the processes print."""
    started = []
    for _ in range(count):
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "project.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *flags,
        ]
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT if output else None
        )
        started.append((f"http://127.0.0.1:{port}", process))
    for url, process in started:
        wait_until_serving(url, process)
    return started


def start_worker_processes(
    count: int, env: dict[str, str], queue: str = "default"
) -> list[tuple[str, Any]]:
    """``count`` separate ``manage.py rqworker`` processes on ``queue``, each registered with
    Redis before this returns; (worker name, process) pairs."""
    from redis import Redis
    from rq import Worker

    started = []
    for index in range(count):
        name = f"test-worker-{index}-{free_port()}"
        command = [sys.executable, "manage.py", "rqworker", queue, "--name", name]
        started.append((name, subprocess.Popen(command, cwd=ROOT, env=env)))
    connection = Redis.from_url(env["REDIS_URL"])
    deadline = time.monotonic() + 30
    try:
        while True:
            for _, process in started:
                if process.poll() is not None:
                    raise RuntimeError("an RQ worker process exited")
            registered = {w.name for w in Worker.all(connection=connection)}
            if all(name in registered for name, _ in started):
                return started
            if time.monotonic() > deadline:
                raise RuntimeError("the RQ workers did not register within 30 s")
            time.sleep(0.1)
    except BaseException:
        for _, process in started:
            process.kill()
            process.wait(timeout=10)
        raise
    finally:
        connection.close()


def wait_until_serving(url: str, process: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the gateway process exited")
        try:
            with _opener.open(f"{url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


class WebhookReceiver:
    """What the test server saw, and the statuses it answers with next (then 200)."""

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self._lock = threading.Lock()

    def url(self, path: str = "/hooks/ops") -> str:
        return f"{self.base_url}{path}"

    def record(self, path: str, body: dict[str, Any]) -> int:
        with self._lock:
            self.requests.append({"path": path, "body": body})
            return self.statuses.pop(0) if self.statuses else 200

    def codes(self) -> list[str]:
        return [request["body"]["switchboard"]["code"] for request in self.requests]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP server on 127.0.0.1 that records each POST and answers receiver.statuses."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(receiver.delay)
            status = receiver.record(self.path, body)
            reply = f"no such hook: {self.path}".encode()  # receivers do echo their path
            self.send_response(status)
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    receiver.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
