"""Provider credentials: one per environment, encrypted, rotated on a schedule."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import openai
import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.utils import timezone
from redis import Redis

from project.models import Alert, Channel
from routing.actions import alert_overdue_credentials
from routing.audit import audit
from routing.breaker import KEY as BREAKER_KEY
from routing.models import Deployment, Provider, ProviderCredential, Route
from tests.factories import chat, make_client_key
from tests.servers import SimulatorHandle, WebhookReceiver

STAGING_SECRET = "sk-aimlapi-staging-0123456789"


def add_credential(provider: str, environment: str, secret: str) -> ProviderCredential:
    credential = ProviderCredential(
        provider=Provider.objects.get(name=provider), environment=environment
    )
    credential.set_secret(secret)
    credential.save()
    return credential


@pytest.fixture
def client_for(gateway: str) -> Iterator[Callable[[str], openai.OpenAI]]:
    """Makes an OpenAI client with a new key of the environment asked for."""
    made: list[openai.OpenAI] = []

    def make(environment: str) -> openai.OpenAI:
        key = make_client_key(name=f"{environment} service", env=environment)
        made.append(openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def ask(client: openai.OpenAI, model: str = "summary") -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, **chat())
    return raw.headers["x-switchboard-provider"]


def sent_key(demo: SimulatorHandle, provider: str = "aimlapi") -> str:
    return demo.calls()[provider]["last_headers"]["authorization"].removeprefix("Bearer ")


def test_each_environment_sends_its_own_credential(
    client_for: Callable[[str], openai.OpenAI], demo: SimulatorHandle
) -> None:
    add_credential("aimlapi", "staging", STAGING_SECRET)

    assert ask(client_for("staging")) == "aimlapi"
    assert sent_key(demo) == STAGING_SECRET
    assert ask(client_for("prod")) == "aimlapi"
    assert sent_key(demo) == "simulator"  # the demo's shared key, still prod's


def test_a_key_reaches_only_providers_with_a_credential_for_its_environment(
    client_for: Callable[[str], openai.OpenAI], demo: SimulatorHandle
) -> None:
    ProviderCredential.objects.filter(environment="dev").exclude(provider__name="google").delete()
    dev = client_for("dev")

    assert ask(dev) == "google"
    assert demo.count("aimlapi") == 0
    models = {model.id for model in dev.models.list()}
    assert "google/gemini-2.0-flash" in models and "aimlapi/gpt-4o-mini" not in models
    with pytest.raises(openai.NotFoundError, match="not available to dev keys"):
        ask(dev, "openai/gpt-4o-mini")


def test_a_route_of_other_environments_is_not_found_for_a_key(
    client_for: Callable[[str], openai.OpenAI], demo: SimulatorHandle
) -> None:
    Route.objects.filter(name="summary").update(environments=["prod"])
    Route.objects.get(name="summary").save()  # update() sends no signal; save bumps the table

    with pytest.raises(openai.NotFoundError, match="not available to staging keys"):
        ask(client_for("staging"))
    assert ask(client_for("prod")) == "aimlapi"
    assert demo.count("aimlapi") == 1


def test_a_refused_credential_falls_back_without_opening_the_shared_breaker(
    client_for: Callable[[str], openai.OpenAI], demo: SimulatorHandle, redis: Redis
) -> None:
    bad = add_credential("aimlapi", "staging", "invalid-staging-key-0123")
    staging = client_for("staging")
    for _ in range(8):  # more than the five failures that would open a breaker
        assert ask(staging) == "openai"

    deployment = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    assert redis.hget(BREAKER_KEY.format(deployment.id), "state") in (None, b"closed")
    assert ask(client_for("prod")) == "aimlapi"
    refused = [f for f in audit(redis) if f.problem.startswith("refused by the provider")]
    assert [f.subject for f in refused] == [f"aimlapi staging ({bad.source})"]


def test_a_new_credential_takes_over_on_every_gateway_process_within_a_second(
    two_gateways: list[str], demo: SimulatorHandle
) -> None:
    key = make_client_key(name="prod service", env="prod")
    with (
        openai.OpenAI(base_url=f"{two_gateways[0]}/v1", api_key=key) as first,
        openai.OpenAI(base_url=f"{two_gateways[1]}/v1", api_key=key) as second,
    ):
        for client in (first, second):
            ask(client)
            assert sent_key(demo) == "simulator"

        add_credential("aimlapi", "prod", "sk-aimlapi-rotated-0123456789")
        changed = time.monotonic()

        for client in (first, second):
            while True:
                ask(client)
                if sent_key(demo) == "sk-aimlapi-rotated-0123456789":
                    break
                assert time.monotonic() - changed < 1.5, "the old credential is still sent"
                time.sleep(0.05)


@pytest.mark.django_db
def test_an_overdue_credential_raises_one_alert_that_reaches_email_and_webhook(
    webhook: WebhookReceiver,
) -> None:
    from project.jobs import deliver_alerts

    provider = Provider.objects.create(name="acme", protocol="openai", base_url="http://x/v1")
    credential = add_credential("acme", "prod", "sk-acme-prod-0123456789")
    Channel.objects.create(kind="email", name="security", target="security@example.com")
    Channel.objects.create(kind="webhook", name="ops", target=webhook.url())

    assert alert_overdue_credentials() == 0
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert alert_overdue_credentials() == 1
        assert alert_overdue_credentials() == 0  # once per due date
        deliver_alerts()

    alert = Alert.objects.get(kind="credential_rotation_due")
    assert alert.subject == f"credential:{credential.code}"
    assert "acme" in alert.title and provider.name in mail.outbox[0].subject
    assert alert.deliveries.filter(ok=True).count() == 2
    assert [r["body"]["switchboard"]["kind"] for r in webhook.requests] == [
        "credential_rotation_due"
    ]
    assert "sk-acme" not in alert.body + alert.title + str(alert.data)


@pytest.mark.django_db
def test_the_admin_stores_a_new_key_encrypted_and_lists_overdue_ones() -> None:
    provider = Provider.objects.create(name="acme", protocol="openai", base_url="http://x/v1")
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    secret = "sk-acme-admin-entered-9876"

    response = admin.post(
        "/admin/routing/providercredential/add/",
        {
            "provider": provider.pk,
            "environment": "staging",
            "label": "",
            "api_key_env": "",
            "secret": secret,
            "rotation_days": 30,
            "enabled": "on",
        },
    )

    assert response.status_code == 302
    credential = ProviderCredential.objects.get(provider=provider)
    assert credential.secret() == secret and credential.secret_last4 == "9876"
    assert secret not in credential.secret_encrypted
    page = admin.get(f"/admin/routing/providercredential/{credential.pk}/change/")
    assert secret not in page.content.decode() and "…9876" in page.content.decode()
    assert (
        "acme"
        not in admin.get("/admin/routing/providercredential/?rotation=overdue")
        .content.decode()
        .split('id="result_list"')[-1]
    )
    ProviderCredential.objects.update(rotated_at=timezone.now() - timedelta(days=40))
    overdue = admin.get("/admin/routing/providercredential/?rotation=overdue").content.decode()
    assert "(overdue)" in overdue


def test_a_request_with_a_failing_provider_logs_no_credential(
    gateway: str, demo: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "invalid-but-secret-0123456789"
    add_credential("aimlapi", "prod", secret)
    demo.fault(provider="openai", mode="error", status=500)
    caplog.set_level("DEBUG")

    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {make_client_key()}"},
        json={"model": "summary", **chat()},
    )

    assert response.status_code == 200
    assert secret not in response.text and secret not in str(response.headers)
    assert secret not in caplog.text


def test_a_dump_of_every_table_holds_no_plaintext_secret(
    gateway: str, demo: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    from billing.jobs import drain_ledger
    from routing.audit import _database_text
    from routing.jobs import persist_key_usage

    caplog.set_level("DEBUG")
    stored = add_credential("aimlapi", "prod", "sk-aimlapi-stored-secret-0123456789")
    raw_client_key = make_client_key(name="notes")
    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {raw_client_key}"},
        json={"model": "summary", **chat()},
    )
    assert response.headers["x-switchboard-provider"] == "aimlapi"
    drain_ledger()
    persist_key_usage()

    dump = _database_text()
    for secret in (stored.secret(), raw_client_key):
        assert secret not in dump
        assert secret not in caplog.text
    assert ProviderCredential.objects.get(pk=stored.pk).last_used_at is not None
