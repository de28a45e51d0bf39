"""The simulator tests use the session's simulator (tests/conftest.py), cleared per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import SimulatorHandle


@pytest.fixture(autouse=True)
def simulator(simulator_server: SimulatorHandle) -> Iterator[SimulatorHandle]:
    simulator_server.clear()
    yield simulator_server
    simulator_server.clear()
