"""`/healthz`: whether this process reaches its database and Redis: 200, or 503 naming which."""

from __future__ import annotations

import logging
from functools import cache

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

log = logging.getLogger(__name__)


@cache
def _redis() -> redis.Redis:
    # Short timeouts of its own: a load balancer's check must not hang on a stuck server.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        log.warning("healthz: database unreachable: %s", type(exc).__name__)
        return "unreachable"
    return "ok"


def check_redis() -> str:
    try:
        _redis().ping()
    except Exception as exc:
        log.warning("healthz: redis unreachable: %s", type(exc).__name__)
        return "unreachable"
    return "ok"


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": check_database(), "redis": check_redis()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503
    )
