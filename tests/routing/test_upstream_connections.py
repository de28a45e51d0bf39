"""Upstream connections: pooled and kept alive, with a timeout per phase rather than per call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
from django.conf import settings
from django.test import override_settings

from billing.models import UsageRecord
from routing.models import Provider
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def calls_in_a_new_event_loop(count: int, stream: bool = False) -> None:
    """``count`` calls in sequence through a fresh engine, so a fresh upstream client."""
    from routing.client import EnhancedHybridAIClient, close_engine

    async def calls() -> None:
        client = EnhancedHybridAIClient()
        try:
            for _ in range(count):
                await client.acomplete(model="summary", messages=MESSAGES)
            if stream:
                async for _ in client.astream(model="summary", messages=MESSAGES):
                    pass
        finally:
            await close_engine()

    asyncio.run(calls())


def test_calls_to_a_provider_reuse_one_kept_alive_connection(demo: SimulatorHandle) -> None:
    calls_in_a_new_event_loop(5, stream=True)

    assert demo.count("aimlapi") == 6
    assert demo.calls()["aimlapi"]["connections"] == 1


def test_without_pooling_every_call_opens_a_connection(demo: SimulatorHandle) -> None:
    nopool = {**settings.SWITCHBOARD, "UPSTREAM_TRANSPORT": "aiohttp-nopool"}
    with override_settings(SWITCHBOARD=nopool):
        calls_in_a_new_event_loop(3)

    assert demo.calls()["aimlapi"]["connections"] == 3


def test_a_long_stream_is_not_cut_while_it_keeps_talking(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    # Each read may take 0.5 s; the stream as a whole takes far longer, and that is fine.
    Provider.objects.update(read_timeout=0.5)
    Provider.objects.get(name="aimlapi").save()  # bump the table version
    demo.fault(provider="aimlapi", mode="slow_stream", delay_ms=250)

    started = time.monotonic()
    chunks: list[Any] = list(
        openai_client.chat.completions.create(model="summary", messages=MESSAGES, stream=True)
    )

    assert time.monotonic() - started > 1.0
    assert len(chunks) > 5
    drain_ledger()
    record = UsageRecord.objects.get()
    assert (record.status, record.provider) == ("ok", "aimlapi")


def test_a_provider_that_goes_quiet_for_longer_than_a_read_may_take_is_left(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    Provider.objects.update(read_timeout=0.3)
    Provider.objects.get(name="aimlapi").save()
    demo.fault(provider="aimlapi", mode="slow", delay_ms=2000)

    raw = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES
    )

    assert raw.headers["x-switchboard-provider"] == "openai"
    drain_ledger()
    assert UsageRecord.objects.get().attempts[0]["code"] == "timeout"
