"""A fake of the four upstream LLM providers, speaking their real wire protocols.

Pure ASGI with no Django imports, so tests, benchmarks and the
`simulate_providers` command can all run it. See `routing.simulator.app`.
"""

from __future__ import annotations

from routing.simulator.app import Simulator, create_app

__all__ = ["Simulator", "create_app"]
