"""Shared fixtures: real Redis, a real database, the provider simulator, a live gateway.

The suite's settings and environment are in tests/settings.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

VAR = Path(__file__).resolve().parent.parent / "var"
# Django recreates the SQLite test database by deleting its file; a write-ahead
# log left beside it by an earlier run's gateway processes would corrupt the new one.
for leftover in VAR.glob("test.sqlite3*"):
    leftover.unlink()

from tests.servers import (  # noqa: E402
    RunningServer,
    SimulatorHandle,
    WebhookReceiver,
    start_server,
)


@pytest.fixture(autouse=True)
def redis() -> Iterator[object]:
    """A clean Redis for every test, and gateways that forget what they cached."""
    from project.redis import sync_client
    from routing.client import drop_allowances, forget_cached_state

    client = sync_client()
    client.flushdb()
    forget_cached_state()
    drop_allowances()
    yield client
    forget_cached_state()
    drop_allowances()


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorHandle]:
    from routing.simulator import create_app

    server = start_server(create_app(), lifespan="off")
    try:
        yield SimulatorHandle(server.url)
    finally:
        server.stop()


@pytest.fixture
def simulator(simulator_server: SimulatorHandle) -> Iterator[SimulatorHandle]:
    simulator_server.clear()
    yield simulator_server
    simulator_server.clear()


@pytest.fixture(scope="session")
def gateway_server() -> Iterator[RunningServer]:
    from project.asgi import application

    server = start_server(application)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway(gateway_server: RunningServer, transactional_db: None) -> str:
    """The live gateway's base URL, with a database its threads can see."""
    return gateway_server.url


@pytest.fixture
def demo(simulator: SimulatorHandle, transactional_db: None) -> SimulatorHandle:
    """The demo configuration (four providers, routes `summary` and `fallback-demo`)."""
    from tests.factories import load_demo_config

    load_demo_config(simulator.url)
    return simulator


@pytest.fixture
def client_key(transactional_db: None) -> str:
    from tests.factories import make_client_key

    return make_client_key()


@pytest.fixture
def openai_client(gateway: str, client_key: str, demo: SimulatorHandle) -> Iterator[object]:
    import openai

    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=client_key, max_retries=0)
    yield client
    client.close()


def database_url() -> str:
    """The test database, as a URL another process can open."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def two_gateways(demo: SimulatorHandle) -> Iterator[list[str]]:
    """Two more gateway processes sharing this test's database and Redis."""
    from django.conf import settings

    from tests.servers import start_gateway_processes

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SWITCHBOARD_TABLE_CHECK_SECONDS": "0",
    }
    started = start_gateway_processes(2, env)
    try:
        yield [url for url, _ in started]
    finally:
        for _, process in started:
            process.terminate()
        for _, process in started:
            process.wait(timeout=10)


@pytest.fixture
def two_workers(transactional_db: None) -> Iterator[list[str]]:
    """Two RQ worker processes on the "default" queue, sharing this test's database and Redis;
    yields their names."""
    from django.conf import settings

    from tests.servers import start_worker_processes

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
    }
    started = start_worker_processes(2, env)
    try:
        yield [name for name, _ in started]
    finally:
        for _, process in started:
            process.terminate()
        for _, process in started:
            process.wait(timeout=20)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 (tests.servers.WebhookReceiver)."""
    from tests.servers import webhook_receiver

    with webhook_receiver() as receiver:
        yield receiver
