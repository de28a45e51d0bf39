"""Running the simulator under uvicorn, shared by the CLI, the command and tests."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from routing.simulator.app import Simulator, create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class _QuietResets(logging.Filter):
    """Drop uvicorn's complaint about responses we leave unfinished on purpose.

    The reset and stream_cut faults end a response early, which uvicorn logs
    as an error; in a simulator that is the feature, not a bug.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable returned without completing")


def build_config(
    app: Simulator | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    delay_ms: int | None = None,
    **options: Any,
) -> uvicorn.Config:
    settings: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "off",
        "access_log": False,
        "log_level": "info",
        # A client abandoning a "timeout" fault frees its task; this bounds the rest.
        "timeout_graceful_shutdown": 5,
    }
    settings.update(options)
    config = uvicorn.Config(app or create_app(delay_ms), host=host, port=port, **settings)
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietResets) for f in error_log.filters):
        error_log.addFilter(_QuietResets())
    return config


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, delay_ms: int | None = None) -> None:
    uvicorn.Server(build_config(host=host, port=port, delay_ms=delay_ms)).run()
