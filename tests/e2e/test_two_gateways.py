"""Two gateway processes sharing Redis and the database agree on shared state:
breakers, revocation, and a rotated key's grace period."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.factories import make_client_key
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


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


GRACE_SECONDS = 3.0  # long enough for four requests on a slow CI machine


def chat_until_refused(clients: list[openai.OpenAI], code: str, deadline: float) -> None:
    """Send each gateway requests until it answers 401 ``code``; fail at ``deadline`` (epoch)."""
    for client in clients:
        while True:
            try:
                client.chat.completions.create(model="summary", messages=MESSAGES)
            except openai.AuthenticationError as refused:
                assert refused.code == code
                break
            assert time.time() < deadline, f"{client.base_url} still accepts the key"
            time.sleep(0.05)


@pytest.mark.slow
def test_a_key_rotated_through_the_api_works_on_both_for_its_grace_then_only_its_successor(
    two_gateways: list[str], client_key: str, demo: SimulatorHandle
) -> None:
    from routing.models import ClientKey

    admin_key = make_client_key(name="ops", scopes=["admin"])
    old = ClientKey.objects.get(name="tests")
    olds = [sdk(url, client_key) for url in two_gateways]
    for client in olds:  # each process has built its table
        client.chat.completions.create(model="summary", messages=MESSAGES)

    with httpx.Client(trust_env=False) as http:
        rotated = http.post(
            f"{two_gateways[0]}/api/v1/keys/{old.code}/rotate",
            json={"grace_hours": GRACE_SECONDS / 3600},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert rotated.status_code == 201
        old.refresh_from_db()
        assert old.expires_at is not None
        grace_ends = old.expires_at.timestamp()
        news = [sdk(url, rotated.json()["key"]) for url in two_gateways]

        for client in olds + news:
            client.chat.completions.create(model="summary", messages=MESSAGES)
        assert time.time() < grace_ends, "too slow to try both keys within the grace period"

        time.sleep(max(0.0, grace_ends - time.time()))
        chat_until_refused(olds, "expired_api_key", deadline=grace_ends + 1)
        for client in news:
            client.chat.completions.create(model="summary", messages=MESSAGES)

        revoked = http.post(
            f"{two_gateways[1]}/api/v1/keys/{rotated.json()['code']}/revoke",
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert revoked.status_code == 200
        chat_until_refused(news, "invalid_api_key", deadline=time.time() + 1)

    for client in olds + news:
        client.close()
