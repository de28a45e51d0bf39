"""Two gateway processes sharing Redis and the database agree on shared state."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from django.conf import settings
from django.db import connection

from tests.servers import SimulatorHandle

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_gateways(demo: SimulatorHandle) -> Iterator[list[str]]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SWITCHBOARD_TABLE_CHECK_SECONDS": "0",
    }
    processes, urls = [], []
    for _ in range(2):
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
            "--log-level",
            "warning",
        ]
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, process in zip(urls, processes, strict=True):
            wait_until_serving(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway process exited"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"{url} did not start")


@pytest.mark.slow
def test_a_breaker_opened_through_one_gateway_is_honoured_by_the_other(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    first, second = (
        openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
        for url in two_gateways
    )
    demo.fault(provider="aimlapi", mode="no_credit")
    raw = first.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES)
    assert raw.headers["x-switchboard-provider"] == "openai"
    aimlapi_calls = demo.count("aimlapi")

    raw = second.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES)

    assert raw.headers["x-switchboard-provider"] == "openai"
    assert raw.headers["x-switchboard-attempts"] == "1"
    assert demo.count("aimlapi") == aimlapi_calls
    first.close()
    second.close()


@pytest.mark.slow
def test_a_key_revoked_in_the_database_stops_working_on_both(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    from routing.actions import revoke_client_key
    from routing.models import ClientKey

    clients = [
        openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
        for url in two_gateways
    ]
    for client in clients:
        client.chat.completions.create(model="summary", messages=MESSAGES)

    revoke_client_key(ClientKey.objects.get())

    for client in clients:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="summary", messages=MESSAGES)
        client.close()
