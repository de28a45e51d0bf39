"""A fault with a `rate` fails only that share of the calls it matches, at random."""

from __future__ import annotations

import urllib.error

import pytest

from routing.simulator.state import FaultBook
from tests.servers import SimulatorHandle


def test_a_fault_with_a_rate_fails_about_that_share_of_calls_and_spares_the_rest() -> None:
    book = FaultBook()
    book.add({"provider": "openai", "mode": "error", "status": 500, "rate": 0.1, "seed": 6})
    book.add({"provider": "openai", "mode": "rate_limit"})

    taken = [book.take("openai", "gpt-4o") for _ in range(2000)]

    errors = sum(1 for fault in taken if fault is not None and fault.mode == "error")
    assert 150 <= errors <= 250
    # A call the first fault spares goes on to the next one.
    assert all(fault is not None for fault in taken)


def test_a_seeded_rate_fails_the_same_calls_every_time() -> None:
    def pattern() -> list[bool]:
        book = FaultBook()
        book.add({"provider": "*", "mode": "error", "rate": 0.3, "seed": 42})
        return [book.take("google", "gemini-2.0-flash") is not None for _ in range(50)]

    assert pattern() == pattern()


def test_times_counts_only_the_calls_a_rated_fault_fails() -> None:
    book = FaultBook()
    book.add({"provider": "openai", "mode": "error", "rate": 0.5, "times": 3, "seed": 1})

    failed = sum(book.take("openai", "gpt-4o") is not None for _ in range(100))

    assert failed == 3
    assert book.describe() == []


def test_the_control_api_takes_a_rate_and_refuses_a_bad_one(simulator: SimulatorHandle) -> None:
    added = simulator.fault(provider="openai", mode="error", status=500, rate=0.25, seed=3)
    assert (added["rate"], added["seed"]) == (0.25, 3)

    for rate in (0, 1.5, "often", True):
        with pytest.raises(urllib.error.HTTPError) as refused:
            simulator.fault(provider="openai", mode="error", rate=rate)
        with refused.value as error:
            assert error.code == 400
