"""`make run`: the whole stack on one machine, in the foreground.

Starts the provider simulator, loads the demo, then the ASGI server, an RQ
worker with its scheduler, a worker for batch jobs and the periodic-job
scheduler (rqcron), all sharing one Redis (the embedded one when REDIS_URL is
unset). Ctrl-C stops them all; if any of them dies, the rest are stopped too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.serving import uvicorn_command


class Command(BaseCommand):
    help = "Run the web server, a worker, the scheduler and the provider simulator together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--simulator-port", type=int, default=int(os.environ.get("SIMULATOR_PORT", "8001"))
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port, sim_port = options["port"], options["simulator_port"]
        simulator = f"http://127.0.0.1:{sim_port}"
        env = {
            **os.environ,
            "SWITCHBOARD_SIMULATOR_KEY": os.environ.get("SWITCHBOARD_SIMULATOR_KEY", "simulator"),
            "PYTHONUNBUFFERED": "1",
        }
        # Children join this process's Redis (embedded or not) through the environment.
        env.setdefault("REDIS_URL", settings.REDIS_URL)
        # Every process that serves requests writes its metrics there, and /metrics adds
        # them up (docs/observability.md); emptied first, so counts start from zero.
        env["PROMETHEUS_MULTIPROC_DIR"] = fresh_metrics_dir(
            os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(settings.VAR_DIR / "metrics")
        )
        os.environ.update(env)
        python = sys.executable
        children: list[tuple[str, subprocess.Popen[bytes]]] = []

        def start(name: str, command: list[str]) -> None:
            self.stdout.write(f"starting {name}: {' '.join(command)}")
            children.append((name, subprocess.Popen(command, env=env)))

        def stop_all() -> None:
            for _name, child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 10
            for _name, child in children:
                try:
                    child.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            start("simulator", [python, "-m", "routing.simulator", "--port", str(sim_port)])
            wait_for(f"{simulator}/healthz", children)
            set_demo_outage(simulator)
            call_command("load_demo", simulator=simulator)
            start("web", uvicorn_command(python, port))
            start("worker", [python, "manage.py", "rqworker", "default", "--with-scheduler"])
            # Batches have a worker of their own: a long batch never delays the periodic jobs.
            start("batch worker", [python, "manage.py", "rqworker", "batch"])
            start("cron", [python, "manage.py", "rqcron", "project.cron"])
            wait_for(f"http://127.0.0.1:{port}/healthz", children)
            self.stdout.write(
                f"\nSwitchboard is serving on http://127.0.0.1:{port} "
                f"(admin: http://127.0.0.1:{port}/admin/, simulator: {simulator}).\n"
                "Try the fallback demo: model 'fallback-demo' (its first provider is down).\n"
            )
            while True:
                for name, child in children:
                    if child.poll() is not None:
                        raise CommandError(f"{name} exited with status {child.returncode}")
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            stop_all()


def fresh_metrics_dir(path: str) -> str:
    """Create the metrics directory, or empty it of an earlier run's files."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()
    return str(folder)


def wait_for(url: str, children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, child in children:
            if child.poll() is not None:
                raise CommandError(f"{name} exited with status {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise CommandError(f"{url} did not answer within 60 s")


def set_demo_outage(simulator: str) -> None:
    """The demo route's first hop answers 503, so the demo shows a fallback."""
    fault = {"provider": "aimlapi", "model": "gpt-4o-outage", "mode": "error", "status": 503}
    request = urllib.request.Request(
        f"{simulator}/_control/faults",
        data=json.dumps(fault).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):
        pass
