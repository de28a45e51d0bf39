"""Money is Decimal end to end, with one precision for every stored amount."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MONEY_MAX_DIGITS = 20
MONEY_DECIMAL_PLACES = 10
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_DECIMAL_PLACES)
PER_MTOK = Decimal(1_000_000)


def quantize(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def token_cost(
    prompt_tokens: int,
    completion_tokens: int,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
    cached_tokens: int = 0,
    cached_input_per_mtok: Decimal | None = None,
) -> Decimal:
    """What a call costs at per-million-token prices.

    ``cached_tokens`` are the part of ``prompt_tokens`` the provider read from
    its prompt cache; they cost the cached price where one is configured.
    """
    cached = min(cached_tokens, prompt_tokens) if cached_input_per_mtok is not None else 0
    fresh = prompt_tokens - cached
    total = (
        fresh * input_per_mtok
        + cached * (cached_input_per_mtok or Decimal(0))
        + completion_tokens * output_per_mtok
    )
    return quantize(total / PER_MTOK)
