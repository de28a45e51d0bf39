"""Plain helpers that make deterministic test data."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from routing.actions import create_client_key, import_config
from routing.config import parse
from routing.management.commands.load_demo import DEMO_CONFIG
from routing.models import Provider, ProviderCredential

if TYPE_CHECKING:
    from routing.engine import Answer


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


def answer_in_process(
    deliver: Callable[[Answer], Awaitable[None]],
    times: int = 1,
    body: dict[str, Any] | None = None,
) -> None:
    """Ask the in-process API ``times`` (the demo's "summary" route by default), handing
    each answer to ``deliver`` as the HTTP gateway hands it to its client."""
    from routing.client import EnhancedHybridAIClient, close_engine
    from routing.schema import validate_chat_body

    async def ask() -> None:
        try:
            for _ in range(times):
                request = validate_chat_body(body or {"model": "summary", **chat()})
                await EnhancedHybridAIClient().run(request, deliver=deliver)
        finally:
            await close_engine()

    asyncio.run(ask())
