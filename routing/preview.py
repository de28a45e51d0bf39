"""`POST /api/v1/route/preview`: what the gateway would do with a chat request, without doing it.

The dry run goes through the engine's own steps (`Engine.preview`: context,
rules, resolve, compliance, ranking, then the providers' quota marks), the same
functions a real request calls, so with the same request and the same shared
state the preview's first candidate is the deployment that is called first.
Nothing is reserved, admitted, cached or sent to any provider, and no usage
record is written.
"""

from __future__ import annotations

import time
from typing import Any

from project.errors import ApiError
from routing.breaker import State
from routing.engine import Caller, Engine, Run
from routing.schema import ChatRequest
from routing.table import KeyInfo


def first_try(engine: Engine, run: Run, readings: dict[int, Any]) -> str | None:
    """The label of the candidate `Engine._candidates` would try first (open breakers
    still cooling down are skipped; if every breaker is open, the first of them)."""
    chain = run.resolution.chain
    now = time.time()
    for deployment in chain:
        reading = readings[deployment.id]
        if reading.state is State.OPEN and not reading.cooled_down(engine.breakers.policy, now):
            continue
        return deployment.label
    return chain[0].label if chain else None


async def preview(engine: Engine, request: ChatRequest, key_hash: str) -> dict[str, Any]:
    table = await engine.table()
    key: KeyInfo | None = table.keys.get(key_hash)
    if key is None:
        raise ApiError(401, "Invalid API key, or the key was revoked.", "invalid_api_key")
    if "chat" not in key.scopes:
        raise ApiError(403, "This key lacks the 'chat' scope.", "insufficient_scope")
    run = await engine.preview(request, Caller(key=key))
    readings = await engine.breakers.read([d.id for d in run.resolution.chain])
    decision = run.decision
    return {
        "model": request.model,
        "route": run.resolution.route,
        "context": decision.get("context", {}),
        "rule": decision.get("rule", {}),
        "ranking": decision.get("ranking", {}),
        "order": [d.label for d in run.resolution.chain],
        "first": first_try(engine, run, readings),
        "params": {
            name: request.params[name]
            for name in ("max_tokens", "max_completion_tokens")
            if name in request.params
        },
        # Everything else the real request would carry (rollout, experiment arms).
        "decision": {k: v for k, v in decision.items() if k not in ("context", "rule", "ranking")},
    }


def preview_sync(request: ChatRequest, key_hash: str) -> dict[str, Any]:
    """For the DRF view: run the preview on the engine's own event loop."""
    from routing.client import _portal, current_engine

    async def run() -> dict[str, Any]:
        return await preview(current_engine(), request, key_hash)

    return _portal().call(run())
