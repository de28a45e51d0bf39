"""Scoring an answer where the engine commits it: one call, on the usage entry.

The engine calls `assess()` with the answer's text and finish reason just
before it writes the usage entry (non-stream: the completion; stream: the text
the translator accumulated). Cache hits and deduplicated answers are not scored
again: their answer was scored when its own call made it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from routing.quality.config import QualityConfig
from routing.quality.scoring import Scored, score

if TYPE_CHECKING:
    from billing.ledger import UsageEntry
    from routing.context import RoutingContext
    from routing.schema import ChatRequest

log = logging.getLogger(__name__)


def assess(
    entry: UsageEntry,
    request: ChatRequest,
    context: RoutingContext,
    text: str,
    finish_reason: str | None,
    config: QualityConfig,
    target_ms: int | None = None,
) -> Scored | None:
    """Score the answer onto ``entry``: `quality_score`, and `decision["quality"]`.

    ``target_ms``: the route's latency target (`RoutePolicy.latency_target_ms`), if any.
    A score is never worth the usage record it rides with: a failure is logged, not raised.
    """
    try:
        return _assess(entry, request, context, text, finish_reason, config, target_ms)
    except Exception:
        log.exception("quality scoring of %s failed; recorded without a score", entry.request_id)
        return None


def _assess(
    entry: UsageEntry,
    request: ChatRequest,
    context: RoutingContext,
    text: str,
    finish_reason: str | None,
    config: QualityConfig,
    target_ms: int | None,
) -> Scored:
    # Only a language the client stated is a requirement; a detected one is a guess.
    asked = context.language if context.sources.get("language") == "metadata" else ""
    scored = score(
        text,
        finish_reason,
        wants_json=request.wants_json,
        language_asked=asked,
        latency_ms=entry.latency_ms,
        target_ms=target_ms,
        weights=config.weights,
    )
    entry.quality_score = scored.score
    entry.decision["quality"] = scored.as_dict()
    return scored
