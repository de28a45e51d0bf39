"""Each deployment's rolling quality (automated score blended with feedback) is published
to the Redis hash that quality-based routing reads."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import UsageRecord
from project.cron import PERIODIC_JOBS
from routing.models import Deployment, Feedback
from routing.quality.jobs import publish_deployment_quality
from routing.quality.rolling import QUALITY_KEY
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

MESSAGES: Any = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def answers(deployment_id: int, scores: list[int], minutes_ago: int = 1) -> None:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    start = UsageRecord.objects.count()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"req-{start + i}",
            created=at,
            status="ok",
            deployment_id=deployment_id,
            quality_score=score,
        )
        for i, score in enumerate(scores)
    )


def ratings(deployment_id: int, positive: int, negative: int, days_ago: float = 1) -> None:
    at = timezone.now() - timedelta(days=days_ago)
    start = Feedback.objects.count()
    Feedback.objects.bulk_create(
        Feedback(
            request_id=f"fb-{start + i}",
            kind="thumbs",
            rating=int(i < positive),
            positive=i < positive,
            deployment_id=deployment_id,
            created=at,
            updated=at,
        )
        for i in range(positive + negative)
    )


def published(redis: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(QUALITY_KEY).items()}


@pytest.mark.django_db
def test_the_hash_holds_70_percent_automated_and_30_percent_feedback(redis: Any) -> None:
    answers(1, [100] * 6 + [40] * 4)  # mean 76
    ratings(1, positive=5, negative=5)  # 50% positive

    publish_deployment_quality()

    assert published(redis) == {"1": "68.2"}  # 0.7 * 76 + 0.3 * 50


@pytest.mark.django_db
def test_a_part_with_too_few_samples_is_left_out_and_no_information_is_no_field(
    redis: Any,
) -> None:
    answers(1, [90] * 5)  # answers only
    ratings(2, positive=4, negative=1)  # ratings only: 80%
    answers(3, [0, 0])  # below the minimum of 5: nothing is known
    ratings(1, positive=0, negative=4)  # too few to count against deployment 1
    redis.hset(QUALITY_KEY, "9", "12.0")  # a deployment gone quiet since the last run

    publish_deployment_quality()

    assert published(redis) == {"1": "90.0", "2": "80.0"}


@pytest.mark.django_db
def test_only_the_windows_count(redis: Any) -> None:
    answers(1, [100] * 5)
    answers(1, [0] * 20, minutes_ago=61)  # older than the 60-minute window
    ratings(1, positive=5, negative=0)
    ratings(1, positive=0, negative=20, days_ago=8)  # older than the 7-day window

    publish_deployment_quality()

    assert published(redis) == {"1": "100.0"}


@pytest.mark.django_db
@override_settings(SWITCHBOARD_QUALITY_MIN_SAMPLES=1, SWITCHBOARD_QUALITY_WINDOW_MINUTES=5)
def test_the_windows_and_minimum_are_settings(redis: Any) -> None:
    answers(1, [50])
    answers(1, [0] * 3, minutes_ago=10)

    publish_deployment_quality()

    assert published(redis) == {"1": "50.0"}


def test_real_answers_through_the_gateway_publish_their_deployments_score(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Any
) -> None:
    demo.fault(provider="aimlapi", mode="refusal", times=2)
    for _ in range(5):
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)
    drain_ledger()

    scores = publish_deployment_quality()

    aimlapi = Deployment.objects.get(provider__name="aimlapi", name="gpt-4o-mini")
    assert scores == {aimlapi.id: Decimal("76.0")}  # three answers of 100, two refusals of 40
    assert published(redis) == {str(aimlapi.id): "76.0"}


def test_the_publisher_runs_every_minute() -> None:
    assert ("routing.quality.jobs.publish_deployment_quality", 60) in PERIODIC_JOBS
