"""Vendor list prices from genai-prices, read from the installed package.

genai-prices can fetch fresher data over the network; Switchboard never asks it
to (`calc_price` without `update_prices` uses the snapshot in the wheel).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

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
            Usage(input_tokens=1_000_000, output_tokens=1_000_000),
            model_ref=model,
            provider_id=vendor,
        )
    except LookupError:
        return None
    # Tiered prices (by context length) are objects, not Decimals; a call of a
    # million tokens each way prices them at the first tier, which is the list price.
    read_price = calc.model_price.cache_read_mtok
    return ListPrice(
        input_usd_per_mtok=Decimal(calc.input_price),
        output_usd_per_mtok=Decimal(calc.output_price),
        cached_input_usd_per_mtok=read_price if isinstance(read_price, Decimal) else None,
    )
