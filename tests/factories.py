"""Plain helpers that make deterministic test data."""

from __future__ import annotations

from typing import Any

from routing.actions import create_client_key, import_config
from routing.config import parse
from routing.management.commands.load_demo import DEMO_CONFIG
from routing.models import Provider, ProviderCredential


def load_demo_config(simulator_url: str) -> None:
    import_config(parse(DEMO_CONFIG.read_text().replace("{simulator}", simulator_url)))


def make_client_key(name: str = "tests", scopes: list[str] | None = None, env: str = "prod") -> str:
    _, raw = create_client_key(name, scopes or ["chat", "usage:read"], env)
    return raw


def make_provider(
    name: str = "acme",
    environments: dict[str, str] | None = None,
    base_url: str = "http://127.0.0.1:9/v1",
    **fields: Any,
) -> Provider:
    """A provider with a credential per environment, each {environment: stored secret}."""
    provider = Provider.objects.create(name=name, protocol="openai", base_url=base_url, **fields)
    for environment, secret in (environments or {"prod": f"sk-{name}-prod-0123456789"}).items():
        credential = ProviderCredential(provider=provider, environment=environment)
        credential.set_secret(secret)
        credential.save()
    return provider


def chat(content: str = "Summarise: we agreed to ship on Friday.", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


def drain_ledger() -> int:
    from billing.jobs import drain_ledger as drain

    return drain()
