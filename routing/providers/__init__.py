"""The registry of protocol adapters: one stateless instance per `Provider.protocol`."""

from __future__ import annotations

from routing.providers.anthropic import AnthropicAdapter
from routing.providers.base import Adapter
from routing.providers.gemini import GeminiAdapter
from routing.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    adapter.protocol: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter(), GeminiAdapter())
}


def adapter_for(protocol: str) -> Adapter:
    try:
        return ADAPTERS[protocol]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"No adapter for protocol {protocol!r} (known: {known}).") from None
