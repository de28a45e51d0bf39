"""EnhancedHybridAIClient: the engine as a Python API, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection
from django.db.backends.signals import connection_created

from billing.models import UsageRecord
from project.errors import ApiError
from routing.client import EnhancedHybridAIClient, close_engine, forget_cached_state
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "List the action items."}]


def test_the_sync_api_answers_through_the_route(demo: SimulatorHandle) -> None:
    answer = EnhancedHybridAIClient().complete(model="summary", messages=MESSAGES)

    assert "aimlapi" in answer["choices"][0]["message"]["content"]
    assert drain_ledger() == 1
    assert UsageRecord.objects.get().client_key_id is None


def test_the_sync_api_streams_chunks(demo: SimulatorHandle) -> None:
    chunks = list(
        EnhancedHybridAIClient().stream(
            model="anthropic/claude-3-5-haiku-latest", messages=MESSAGES
        )
    )

    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "anthropic" in text


def test_the_async_api_falls_back_like_the_http_gateway(demo: SimulatorHandle) -> None:
    demo.fault(provider="aimlapi", mode="error", status=503)

    async def ask() -> dict:
        try:
            return await EnhancedHybridAIClient().acomplete(model="summary", messages=MESSAGES)
        finally:
            await close_engine()

    answer = asyncio.run(ask())

    assert "openai" in answer["choices"][0]["message"]["content"]


def test_a_client_key_is_checked_and_attributed(demo: SimulatorHandle, client_key: str) -> None:
    EnhancedHybridAIClient(key=client_key).complete(model="summary", messages=MESSAGES)
    drain_ledger()
    assert UsageRecord.objects.get().client_key_name == "tests"

    with pytest.raises(ApiError) as caught:
        EnhancedHybridAIClient(key="sb-prod-nope").complete(model="summary", messages=MESSAGES)
    assert caught.value.status == 401


class QueryCounter:
    """Counts queries on every connection of every thread (the engine reads config in a pool)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.count += 1
        return execute(sql, params, many, context)

    def install(self, sender: object, connection: object, **kwargs: object) -> None:
        connection.execute_wrappers.append(self)  # type: ignore[attr-defined]


def test_a_warm_request_makes_no_database_query(demo: SimulatorHandle, client_key: str) -> None:
    counter = QueryCounter()
    connection_created.connect(counter.install)
    connection.close()
    try:
        client = EnhancedHybridAIClient(key=client_key)
        forget_cached_state()
        client.complete(model="summary", messages=MESSAGES)
        assert counter.count > 0, "the cold request read the routing table (the counter works)"
        counter.count = 0

        for _ in range(5):
            client.complete(model="summary", messages=MESSAGES)

        assert counter.count == 0
    finally:
        connection_created.disconnect(counter.install)
