"""A provider simulator on a free 127.0.0.1 port, shared by the session."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn

from routing.simulator.server import build_config

# Bypass any proxy from the environment: the simulator is always local.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # These tests run without Django (`-p no:django`); then nothing claims the
    # project's DJANGO_SETTINGS_MODULE ini key, and filterwarnings=error turns
    # pytest's "unknown config option" warning into a failed run.
    if not pluginmanager.has_plugin("django"):
        parser.addini("DJANGO_SETTINGS_MODULE", "read by pytest-django when it is loaded")


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

    def calls(self) -> dict[str, Any]:
        return self.control("GET", "/_control/calls")


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorHandle]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None leaves the test run's logging configuration alone.
    config = build_config(port=port, delay_ms=0, log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the provider simulator did not start")
        time.sleep(0.01)
    try:
        yield SimulatorHandle(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(autouse=True)
def redis() -> None:
    """Shadow the suite-wide Redis fixture: the simulator needs neither Redis nor Django."""


@pytest.fixture(autouse=True)
def simulator(simulator_server: SimulatorHandle) -> Iterator[SimulatorHandle]:
    simulator_server.control("DELETE", "/_control/faults")
    simulator_server.control("DELETE", "/_control/calls")
    yield simulator_server
    simulator_server.control("DELETE", "/_control/faults")
