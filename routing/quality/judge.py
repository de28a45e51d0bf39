"""The optional LLM judge: a sampled share of answers scored 1-10 by a model, through
the gateway itself. Off by default.

Switched on by SWITCHBOARD_JUDGE_RATE (the share of answered requests, 0 by
default) with SWITCHBOARD_JUDGE_ROUTE (the route the judge's calls take). A
sampled answer's question and answer travel in the RQ job's arguments only: the
job is kept in Redis until a worker runs it (at most `JOB_TTL_SECONDS`), and
deleted when it ends (`result_ttl=0`; the job never raises, so it never waits in
the failed registry with its content). Nothing is sampled while judging is off,
and never a request under a compliance restriction (healthcare's BAA, a data
region): the judge's route may not be allowed to see it. The judge's own calls
are not cached, not content-sampled, and not judged.

The reply is read by `parse_score`: "Score: 7", "7/10", or a reply that is just
the number; anything else stores nothing (a judge that rambles is not a score).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import TYPE_CHECKING, Any

from django.conf import settings

from routing.context import conversation_text
from routing.policy import Requirements

if TYPE_CHECKING:
    from billing.ledger import UsageEntry
    from routing.schema import ChatRequest

log = logging.getLogger(__name__)

JUDGE_USE_CASE = "judge"
QUESTION_CHARS = 4000  # the end of the conversation: what the answer answers
ANSWER_CHARS = 8000
JOB_TTL_SECONDS = 3600  # a job no worker took in an hour is dropped, with its content
INSTRUCTIONS = (
    "You grade an AI assistant's answer to a user's request for a meeting-notes product. "
    "Judge correctness, completeness and clarity. Reply with one line only: "
    "'Score: N', N from 1 (useless) to 10 (excellent)."
)
SCORE_PATTERNS = (
    re.compile(r"\bscore\W{0,5}(10|[1-9])\b", re.IGNORECASE),
    re.compile(r"\b(10|[1-9])\s*/\s*10\b"),
    re.compile(r"^\W*(10|[1-9])\W*$"),
)


def parse_score(reply: str) -> int | None:
    """The judge's 1-10 score, or None when its reply holds no unambiguous one."""
    for pattern in SCORE_PATTERNS:
        found = pattern.search(reply.strip())
        if found:
            return int(found.group(1))
    return None


def wanted(request: ChatRequest, route: str) -> bool:
    rate = settings.SWITCHBOARD_JUDGE_RATE
    judge_route = settings.SWITCHBOARD_JUDGE_ROUTE
    if rate <= 0 or not judge_route:
        return False
    if route == judge_route or request.metadata.get("use_case") == JUDGE_USE_CASE:
        return False
    if Requirements.of(request.metadata).restricts:
        return False  # health information or a data region: never to another model
    return random.random() < rate


async def maybe_judge(entry: UsageEntry, request: ChatRequest, answer: str) -> None:
    """Queue the judging of an answered request, if sampling picks it (none by default)."""
    if not wanted(request, entry.route):
        return
    question = conversation_text(request.messages)[-QUESTION_CHARS:]
    try:
        await asyncio.to_thread(
            enqueue,
            entry.request_id,
            question,
            answer[:ANSWER_CHARS],
            {
                "route": entry.route,
                "provider": entry.provider,
                "model": entry.model,
                "deployment_id": entry.deployment_id,
            },
        )
    except Exception:  # a judge score is never worth failing the answer it would judge
        log.exception("judging of %s not queued", entry.request_id)


def enqueue(request_id: str, question: str, answer: str, rated: dict[str, Any]) -> None:
    import django_rq

    django_rq.get_queue("default").enqueue(
        judge_answer,
        request_id,
        question,
        answer,
        rated,
        result_ttl=0,
        ttl=JOB_TTL_SECONDS,
    )


def judge_answer(request_id: str, question: str, answer: str, rated: dict[str, Any]) -> int | None:
    """RQ job: ask the judge route, keep its score. Never raises (see the module's note)."""
    from routing.client import EnhancedHybridAIClient
    from routing.quality.models import JudgeScore

    judge_route = settings.SWITCHBOARD_JUDGE_ROUTE
    try:
        reply = EnhancedHybridAIClient().complete(
            model=judge_route,
            messages=[
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": f"Request:\n{question}\n\nAnswer:\n{answer}"},
            ],
            max_tokens=16,
            metadata={
                "use_case": JUDGE_USE_CASE,
                "cache": "false",
                "store_sample": "false",
                "judge_of": request_id,
            },
        )
        text = reply["choices"][0]["message"].get("content") or ""
        score = parse_score(text)
        if score is None:
            log.warning("the judge's reply to %s holds no score; nothing stored", request_id)
            return None
        JudgeScore.objects.update_or_create(
            request_id=request_id,
            defaults={"score": score, "judge_route": judge_route, **rated},
        )
        return score
    except Exception:
        log.exception("judging %s failed", request_id)
        return None
