"""Two gateway processes sharing Redis and the database agree on shared state."""

from __future__ import annotations

import openai
import pytest

from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


@pytest.mark.slow
def test_a_breaker_opened_through_one_gateway_is_honoured_by_the_other(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    first, second = (
        openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
        for url in two_gateways
    )
    demo.fault(provider="aimlapi", mode="no_credit")
    raw = first.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES)
    assert raw.headers["x-switchboard-provider"] == "openai"
    aimlapi_calls = demo.count("aimlapi")

    raw = second.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES)

    assert raw.headers["x-switchboard-provider"] == "openai"
    assert raw.headers["x-switchboard-attempts"] == "1"
    assert demo.count("aimlapi") == aimlapi_calls
    first.close()
    second.close()


@pytest.mark.slow
def test_a_key_revoked_in_the_database_stops_working_on_both(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    from routing.actions import revoke_client_key
    from routing.models import ClientKey

    clients = [
        openai.OpenAI(base_url=f"{url}/v1", api_key=client_key, max_retries=0)
        for url in two_gateways
    ]
    for client in clients:
        client.chat.completions.create(model="summary", messages=MESSAGES)

    revoke_client_key(ClientKey.objects.get())

    for client in clients:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="summary", messages=MESSAGES)
        client.close()
