"""Vendor list prices from genai-prices, read from the installed package.

genai-prices can fetch fresher data over the network; Switchboard never asks it
to (`calc_price` without `update_prices` uses the snapshot in the wheel).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_prices import Usage, calc_price


@dataclass(frozen=True)
class ListPrice:
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal | None


def list_price(vendor: str, model: str) -> ListPrice | None:
    """The vendor's per-million-token list price for ``model``, or None if unknown."""
    try:
        calc = calc_price(
            Usage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=vendor
        )
    except LookupError:
        return None
    return _list(calc.model_price)


def _per_mtok(price: object) -> Decimal | None:
    # Prices tiered by context length quote their first tier: what a meeting-sized
    # prompt pays (a long-context call is billed higher by both the reseller and the vendor).
    if isinstance(price, Decimal):
        return price
    base = getattr(price, "base", None)
    return base if isinstance(base, Decimal) else None


def _list(model_price: Any) -> ListPrice | None:
    input_price = _per_mtok(model_price.input_mtok)
    output_price = _per_mtok(model_price.output_mtok)
    if input_price is None or output_price is None:
        return None
    return ListPrice(input_price, output_price, _per_mtok(model_price.cache_read_mtok))


# Resellers name models "vendor/model"; these prefixes map to genai-prices' provider ids.
VENDOR_PREFIXES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "x-ai": "x-ai",
}


@dataclass(frozen=True)
class DirectPrice:
    """What the same tokens cost at the model's original vendor: the savings baseline."""

    vendor: str
    model: str
    price: ListPrice


def direct_price(model: str, vendor_hint: str = "") -> DirectPrice | None:
    """The original vendor's list price for ``model`` as a reseller names it.

    Tries the provider's own vendor, then a "vendor/" prefix (with AIMLAPI's
    dotted versions, "claude-sonnet-4.5", in the vendor's dashed form), then
    genai-prices' own matching of the bare name.
    """
    candidates: list[tuple[str, str]] = []
    if vendor_hint:
        candidates.append((vendor_hint, model))
    prefix, _, rest = model.partition("/")
    if rest and prefix in VENDOR_PREFIXES:
        vendor = VENDOR_PREFIXES[prefix]
        candidates += [(vendor, rest), (vendor, rest.replace(".", "-"))]
    for vendor, name in candidates:
        price = list_price(vendor, name)
        if price is not None:
            return DirectPrice(vendor, name, price)
    try:
        calc = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model)
    except LookupError:
        return None
    price = _list(calc.model_price)
    return DirectPrice(calc.provider.id, calc.model.id, price) if price else None
