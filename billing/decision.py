"""The routing decision on a usage record, made readable for the admin.

The gateway writes the decision as JSON (context, rule, ranking, and whatever
later steps add); billing renders it from that JSON alone and never imports
routing, so an unknown or older shape still shows, as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

KNOWN = ("context", "rule", "ranking")


def explain(decision: dict[str, Any] | None) -> SafeString:
    decision = decision if isinstance(decision, dict) else {}
    context = decision.get("context") or {}
    sources = context.get("sources") or {}
    context_rows = [
        (name, value, sources.get(name.removesuffix("_confidence"), ""))
        for name, value in context.items()
        if name != "sources" and value not in ("", None, 0.0)
    ]
    rule = decision.get("rule") or {}
    ranking = decision.get("ranking") or {}
    others = {k: v for k, v in decision.items() if k not in KNOWN}
    return render_to_string(
        "billing/decision.html",
        {
            "context_rows": context_rows,
            "matched": rule.get("matched") or [],
            "actions": rule.get("actions") or [],
            "params": rule.get("params") or {},
            "ranking": ranking,
            "candidates": ranking.get("candidates") or [],
            "others": json.dumps(others, indent=2, sort_keys=True) if others else "",
            "empty": not decision,
        },
    )
