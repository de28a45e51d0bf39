"""Production refuses to start without its secrets, passes Django's deploy check, and
throttles password guessing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "SWITCHBOARD_ENV": "production",
    "SECRET_KEY": "x" * 64 + "-a-long-random-production-secret-for-the-test",
    "ALLOWED_HOSTS": "switchboard.example.com",
    "SWITCHBOARD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "DATABASE_URL": "sqlite:////tmp/switchboard-deploy-check.sqlite3",
    "REDIS_URL": os.environ["REDIS_URL"],
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The project's own settings, not the suite's (tests/settings.py fills in the environment).
    base = {
        k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "DJANGO_SETTINGS_MODULE"
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "missing",
    ["SECRET_KEY", "ALLOWED_HOSTS", "SWITCHBOARD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL"],
)
def test_production_refuses_to_start_without_a_secret(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != missing}

    result = manage("check", **env)

    assert result.returncode != 0
    assert missing in result.stderr


def test_production_settings_pass_the_deploy_check() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_five_wrong_passwords_lock_the_login_even_for_the_right_one() -> None:
    User.objects.create_superuser("ops", "ops@example.com", "correct horse battery")
    client = Client()
    for _ in range(5):
        client.post("/admin/login/", {"username": "ops", "password": "guess"})

    response = client.post(
        "/admin/login/", {"username": "ops", "password": "correct horse battery"}
    )

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
