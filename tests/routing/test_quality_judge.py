"""The optional LLM judge: off by default; when on, a sampled answer is scored 1-10 by a
judge route through the gateway itself, and only the score is kept."""

from __future__ import annotations

from typing import Any

import django_rq
import openai
import pytest
from django.test import override_settings
from rq import SimpleWorker

from billing.models import UsageRecord
from routing.models import Deployment, JudgeScore, Route, RouteStep
from routing.quality.judge import parse_score, wanted
from routing.schema import validate_chat_body
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES: Any = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]
JUDGING = {"SWITCHBOARD_JUDGE_RATE": 1.0, "SWITCHBOARD_JUDGE_ROUTE": "judge"}


@pytest.fixture
def judge_route(demo: SimulatorHandle) -> Route:
    """A route of its own for the judge: OpenAI's gpt-4o-mini, apart from `summary`'s first hop."""
    route = Route.objects.create(name="judge")
    deployment = Deployment.objects.get(provider__name="openai", name="gpt-4o-mini")
    RouteStep.objects.create(route=route, deployment=deployment, position=0)
    return route


def run_worker() -> None:
    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def queued() -> int:
    return int(django_rq.get_queue("default").count)


def ask(sdk: openai.OpenAI, **extra: Any) -> str:
    raw = sdk.chat.completions.with_raw_response.create(model="summary", messages=MESSAGES, **extra)
    return str(raw.headers["x-switchboard-request-id"])


def test_judging_is_off_by_default(openai_client: openai.OpenAI, judge_route: Route) -> None:
    ask(openai_client)

    assert queued() == 0
    assert not JudgeScore.objects.exists()


@override_settings(**JUDGING)
def test_a_sampled_answer_is_scored_by_the_judge_route_and_only_the_score_is_kept(
    openai_client: openai.OpenAI, demo: SimulatorHandle, judge_route: Route, redis: Any
) -> None:
    demo.fault(provider="openai", mode="answer", text="Score: 8")
    request_id = ask(openai_client)
    assert queued() == 1

    run_worker()

    score = JudgeScore.objects.get()
    assert (score.request_id, score.score, score.judge_route) == (request_id, 8, "judge")
    assert (score.provider, score.model, score.route) == ("aimlapi", "gpt-4o-mini", "summary")
    assert redis.keys("rq:job:*") == []  # the job, with the content it carried, is gone
    drain_ledger()
    judged = UsageRecord.objects.get(request_id=request_id)
    judge_call = UsageRecord.objects.exclude(request_id=request_id).get()
    assert judge_call.route == "judge" and judge_call.context["judge_of"] == request_id
    assert score.deployment_id == judged.deployment_id


@override_settings(**JUDGING)
def test_a_streamed_answer_is_judged_too(
    openai_client: openai.OpenAI, demo: SimulatorHandle, judge_route: Route
) -> None:
    demo.fault(provider="openai", mode="answer", text="7/10: clear, but misses the owner.")
    for _ in openai_client.chat.completions.create(model="summary", messages=MESSAGES, stream=True):
        pass

    run_worker()

    assert JudgeScore.objects.get().score == 7


@override_settings(**JUDGING)
def test_a_judge_reply_without_a_score_stores_nothing(
    openai_client: openai.OpenAI, judge_route: Route
) -> None:
    ask(openai_client)  # the simulator's judge echoes the request back: no score in it

    run_worker()

    assert not JudgeScore.objects.exists()
    assert queued() == 0


@override_settings(**JUDGING)
def test_healthcare_and_region_bound_requests_and_the_judges_own_calls_are_never_judged() -> None:
    def request(**metadata: str) -> Any:
        return validate_chat_body({"model": "summary", "messages": MESSAGES, "metadata": metadata})

    assert wanted(request(), "summary")
    assert not wanted(request(industry="healthcare"), "summary")
    assert not wanted(request(data_region="eu"), "summary")
    assert not wanted(request(use_case="judge"), "summary")
    assert not wanted(request(), "judge")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Score: 8", 8),
        ("score=10", 10),
        ("**Score:** 3\nThe answer misses the date.", 3),
        ("9/10", 9),
        (" 6 ", 6),
        ("Simulated openai gpt-4o-mini answer: Request: Summarise", None),
        ("I would give it 11 out of 10", None),
        ("", None),
    ],
)
def test_the_judges_reply_is_parsed_strictly(reply: str, expected: int | None) -> None:
    assert parse_score(reply) == expected
