"""How a gateway process is started, in one place: uvicorn serving the ASGI app with the
options the hot path is measured with (bench/RESULTS.md): uvloop, httptools, no access log.

`make run` (`manage.py runstack`) and the benchmarks build their command here; the deploy
recipes spell the same options, and tests/project/test_deploy_recipes.py checks they do.
No Django import: the benchmark scripts use it before any settings exist.
"""

from __future__ import annotations

APP = "project.asgi:application"
OPTIONS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")


def uvicorn_command(python: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return [python, "-m", "uvicorn", APP, "--host", host, "--port", str(port), *OPTIONS]
