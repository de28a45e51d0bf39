"""Fault plans and call records, driven over HTTP by /_control.

All state lives in the server's event loop and is only touched from it, so
nothing here needs a lock.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from itertools import count
from typing import Any

PROVIDERS = ("aimlapi", "openai", "anthropic", "google")
MODES = (
    "error",
    "rate_limit",
    "no_credit",
    "timeout",
    "slow",
    "slow_stream",
    "reset",
    "malformed",
    "stream_cut",
    "quota_low",
    # The call succeeds, but the answer is a poor one (the gateway's quality checks).
    "refusal",
    "empty",
    "invalid_json",
    "answer",
)
# Modes whose call succeeds with a poor answer (simulator.engine.poor_reply).
POOR_ANSWERS = frozenset({"refusal", "empty", "invalid_json", "answer"})
DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_SLOW_MS = 1_000


@dataclass(slots=True)
class Fault:
    id: int
    provider: str
    mode: str
    status: int | None = None
    retry_after: float | None = None
    delay_ms: int | None = None
    # Remaining uses; None means until cleared.
    times: int | None = None
    model: str | None = None
    # The share of matching calls it fails, drawn at random (seeded by `seed` when given);
    # a call it spares goes on to the next fault, or is answered.
    rate: float = 1.0
    seed: int | None = None
    # The answer's text, for mode "answer".
    text: str | None = None
    _draw: random.Random = field(default_factory=random.Random, repr=False)

    def describe(self) -> dict[str, Any]:
        described = asdict(self)
        del described["_draw"]
        return described

    def fires(self) -> bool:
        return self.rate >= 1.0 or self._draw.random() < self.rate


def _bare_model(model: str) -> str:
    # Gemini callers may say "models/gemini-2.5-flash" or just the id.
    return model.removeprefix("models/")


class FaultBook:
    """Faults match first-added first, so tests can script a sequence of failures."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = count(1)

    def add(self, spec: Any) -> Fault:
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object")
        provider = spec.get("provider", "*")
        if provider != "*" and provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)} or '*'")
        mode = spec.get("mode")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        status = _optional_int(spec, "status", 100, 599)
        delay_ms = _optional_int(spec, "delay_ms", 0, 3_600_000)
        times = _optional_int(spec, "times", 1, 1_000_000)
        retry_after = spec.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or retry_after < 0
        ):
            raise ValueError("retry_after must be a non-negative number of seconds")
        model = spec.get("model")
        if model is not None and not isinstance(model, str):
            raise ValueError("model must be a string")
        rate = spec.get("rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise ValueError("rate must be a number above 0 and at most 1")
        seed = _optional_int(spec, "seed", 0, 2**63 - 1)
        text = spec.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > 100_000):
            raise ValueError("text must be a string of at most 100,000 characters")
        if mode == "answer" and text is None:
            raise ValueError("mode 'answer' needs the answer's text")
        fault = Fault(
            id=next(self._ids),
            provider=provider,
            mode=mode,
            status=status,
            retry_after=retry_after,
            delay_ms=delay_ms,
            times=times,
            model=_bare_model(model) if model else None,
            rate=float(rate),
            seed=seed,
            text=text,
            _draw=random.Random(seed),
        )
        self._faults.append(fault)
        return fault

    def take(self, provider: str, model: str) -> Fault | None:
        """The fault for this request, if any, spending one of its uses."""
        if not self._faults:
            return None
        model = _bare_model(model)
        for fault in self._faults:
            if fault.provider not in ("*", provider):
                continue
            if fault.model is not None and fault.model != model:
                continue
            if not fault.fires():
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    def clear(self, provider: str | None = None) -> int:
        before = len(self._faults)
        if provider is None:
            self._faults.clear()
        else:
            self._faults = [f for f in self._faults if f.provider != provider]
        return before - len(self._faults)

    def describe(self) -> list[dict[str, Any]]:
        return [fault.describe() for fault in self._faults]


def _optional_int(spec: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer from {low} to {high}")
    return value


class CallLog:
    def __init__(self) -> None:
        self._calls: dict[str, dict[str, Any]] = {}
        self.reset()

    def reset(self) -> None:
        self._calls = {
            name: {"count": 0, "last_request": None, "last_headers": None, "connections": 0}
            for name in PROVIDERS
        }
        self._peers: dict[str, set[str]] = {name: set() for name in PROVIDERS}

    def record(self, provider: str, request: Any, headers: dict[str, str], peer: str = "") -> None:
        entry = self._calls[provider]
        entry["count"] += 1
        entry["last_request"] = request
        entry["last_headers"] = headers
        # Distinct client addresses: how many connections the calls came over.
        self._peers[provider].add(peer)
        entry["connections"] = len(self._peers[provider])

    def describe(self) -> dict[str, dict[str, Any]]:
        return self._calls
