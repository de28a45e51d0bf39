"""A rollback reaches every gateway process within about a second."""

from __future__ import annotations

import time

import openai
import pytest

from tests.factories import chat
from tests.servers import SimulatorHandle


@pytest.mark.slow
def test_a_rollback_sends_users_back_to_the_legacy_path_on_both_gateways(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    from django.utils import timezone

    from routing.experiments.actions import roll_back
    from routing.models import Rollout, Route

    Rollout.objects.all().delete()  # the demo's draft: one rollout per route
    rollout = Rollout.objects.create(
        route=Route.objects.get(name="summary"),
        legacy_chain=["openai/gpt-4o-mini", "google/gemini-2.0-flash"],
        status=Rollout.Status.RUNNING,
        percent=100,
        started_at=timezone.now(),
        phase_started_at=timezone.now(),
    )
    clients = [
        openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
        for url in two_gateways
    ]

    def provider(client: openai.OpenAI) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="summary", user="alice", **chat()
        )
        return raw.headers["x-switchboard-provider"]

    assert [provider(c) for c in clients] == ["aimlapi", "aimlapi"]

    roll_back(rollout, "rolled back by the test")
    rolled_back_at = time.monotonic()

    for client in clients:
        while provider(client) != "openai":
            assert time.monotonic() - rolled_back_at < 1.0, f"{client.base_url} still on new"
            time.sleep(0.02)
        client.close()
