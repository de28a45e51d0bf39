"""/healthz: 200 while the database and Redis answer, 503 naming the one that does not."""

from __future__ import annotations

import pytest
import redis
from django.db import OperationalError
from django.test import Client

from project import health

pytestmark = pytest.mark.django_db


def test_it_answers_200_when_the_database_and_redis_answer() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_it_answers_503_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)
    monkeypatch.setattr(health, "_redis", lambda: nowhere)

    response = Client().get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "redis": "unreachable"}
    nowhere.close()


def test_it_answers_503_when_the_database_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    class Down:
        def cursor(self) -> None:
            raise OperationalError("connection refused")

    monkeypatch.setattr(health, "connection", Down())

    response = Client().get("/healthz")

    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
    assert response.json()["redis"] == "ok"
