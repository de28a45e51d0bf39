"""The deployment recipes in deploy/ (docs/deploy.md) run real commands with real options,
ask for every secret production requires, and build from what the repository has.

Docker cannot build here (nothing may be downloaded), so the recipes are checked
against the code instead: a command they name that the project does not have, or an
option uvicorn does not know, fails here rather than in a deployment.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from project import serving

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
PRODUCTION_SECRETS = ["SECRET_KEY", "ALLOWED_HOSTS", "SWITCHBOARD_ENCRYPTION_KEYS"]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def unit_commands() -> list[list[str]]:
    commands = []
    for unit in UNITS:
        text = unit.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                commands.append(shlex.split(line.removeprefix("ExecStart=")))
    return commands


def compose_commands() -> list[list[str]]:
    services = compose()["services"]
    commands = [s["command"] for s in services.values() if isinstance(s.get("command"), list)]
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = re.search(r"^CMD (\[.*\])", dockerfile, re.MULTILINE)
    assert cmd is not None
    return [*commands, yaml.safe_load(cmd.group(1))]


def python_commands() -> list[list[str]]:
    """Every `python ...` command of both recipes, from the program's arguments on."""
    out = []
    for command in unit_commands() + compose_commands():
        if command[0].endswith("python"):
            out.append(command[1:])
    return out


def test_every_manage_py_command_of_the_recipes_exists() -> None:
    names = {c[1] for c in python_commands() if c[0] == "manage.py"}

    assert {"migrate", "collectstatic", "rqworker", "rqcron"} <= names
    assert names <= set(get_commands())


def test_the_workers_and_the_scheduler_use_the_queues_and_cron_module_that_exist() -> None:
    from django.conf import settings

    for command in python_commands():
        if command[:2] == ["manage.py", "rqworker"]:
            assert command[2] in settings.RQ_QUEUES
        if command[:2] == ["manage.py", "rqcron"]:
            assert command[2] == "project.cron"
            assert (ROOT / "project" / "cron.py").exists()


def test_every_gateway_command_serves_the_asgi_app_with_options_uvicorn_knows() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    gateways = [c for c in python_commands() if c[:2] == ["-m", "uvicorn"]]

    assert len(gateways) >= 2  # the systemd unit and the image
    for command in gateways:
        assert command[2] == serving.APP
        # The options the hot path is measured with (project/serving.py), in order.
        at = command.index(serving.OPTIONS[0])
        assert tuple(command[at : at + len(serving.OPTIONS)]) == serving.OPTIONS
        for option in (a for a in command[3:] if a.startswith("--")):
            assert re.search(rf"{re.escape(option)}\b", help_text), option


def test_the_image_uses_a_python_the_project_supports_and_copies_only_what_exists() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.search(r"^FROM python:(\d+)\.(\d+)", dockerfile, re.MULTILINE)

    assert version is not None and requires == ">=3.12"
    assert (int(version.group(1)), int(version.group(2))) >= (3, 12)
    for source in re.findall(r"^COPY (\S+(?: \S+)*?) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path


@pytest.mark.parametrize("service", ["migrate", "gateway", "worker", "batch-worker", "cron"])
def test_compose_gives_every_app_service_the_database_redis_and_the_secrets(
    service: str,
) -> None:
    settings = compose()["services"][service]
    env_example = (DEPLOY / "env.example").read_text()

    assert settings["env_file"] == ".env"
    assert {"DATABASE_URL", "REDIS_URL"} <= set(settings["environment"])
    for secret in PRODUCTION_SECRETS:
        assert re.search(rf"^{secret}=", env_example, re.MULTILINE), secret
    assert re.search(r"^SWITCHBOARD_ENV=production$", env_example, re.MULTILINE)


def test_compose_runs_exactly_one_scheduler_and_every_unit_reads_the_environment_file() -> None:
    services = compose()["services"]
    cron = [s for s in services.values() if "rqcron" in (s.get("command") or [])]

    assert len(cron) == 1 and "deploy" not in cron[0]
    for unit in UNITS:
        assert "EnvironmentFile=/etc/switchboard/env" in unit.read_text(), unit.name
