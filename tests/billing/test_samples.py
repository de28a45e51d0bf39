"""Content samples: none by default; opt-in, redacted before they leave the gateway, purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import orjson
import pytest
import time_machine
from django.forms.models import model_to_dict
from pytest_django.fixtures import Settings
from redis import Redis

from billing import samples
from billing.jobs import drain_samples, purge_expired_samples
from billing.ledger import UsageEntry
from billing.models import ContentSample, UsageRecord
from routing.client import EnhancedHybridAIClient
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle

# Sixty characters: the simulator quotes that much of the prompt in its answer.
PERSONAL = "Card 4111 1111 1111 1111, +44 20 7946 0958, jane@example.com"
MESSAGES = [
    {"role": "system", "content": "You take meeting notes."},
    {"role": "user", "content": PERSONAL},
]
REDACTED = "Card [card], [phone], [email]"


def sampling(settings: Settings, rate: float) -> None:
    # A new SWITCHBOARD dict: every engine re-reads its settings when the object changes.
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "SAMPLE_RATE": rate}


def stored_anywhere(redis: Redis) -> str:
    """Everything requests left behind: every value in Redis, then every ledger row."""
    values: list[bytes] = []
    for key in redis.scan_iter():
        kind = redis.type(key)
        if kind == b"list":
            values += redis.lrange(key, 0, -1)
        elif kind == b"hash":
            values += [k + b"=" + v for k, v in redis.hgetall(key).items()]
        elif kind == b"string":
            values.append(redis.get(key) or b"")
    drain_ledger()
    drain_samples()
    rows = [model_to_dict(r) for r in UsageRecord.objects.all()]
    return b"\n".join(values).decode(errors="replace") + orjson.dumps(rows, default=str).decode()


def test_by_default_no_prompt_or_completion_is_stored_anywhere(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    answer = openai_client.chat.completions.create(
        model="summary", messages=MESSAGES, user="u-1001"
    )

    completion = answer.choices[0].message.content or ""
    assert PERSONAL in completion  # the simulator quotes the prompt back
    everything = stored_anywhere(redis)
    # Whole pieces of the prompt: a bare "7946" also turns up in epoch timestamps.
    for content in ("jane@example", "20 7946 0958", "4111 1111", "meeting notes", completion):
        assert content not in everything
    record = UsageRecord.objects.get()
    assert record.end_user == "u-1001"
    assert record.context == {}
    assert not ContentSample.objects.exists()


def test_a_request_cannot_turn_storage_on_when_sampling_is_off(
    openai_client: openai.OpenAI, redis: Redis
) -> None:
    openai_client.chat.completions.create(
        model="summary", messages=MESSAGES, metadata={"store_sample": "true"}
    )

    assert "jane" not in stored_anywhere(redis)
    assert not ContentSample.objects.exists()


def test_with_sampling_on_a_request_is_kept_with_personal_data_redacted(
    openai_client: openai.OpenAI, settings: Settings, redis: Redis
) -> None:
    sampling(settings, 1.0)

    answer = openai_client.chat.completions.with_raw_response.create(
        model="summary", messages=MESSAGES, user="u-1001", metadata={"meeting_type": "sales"}
    )

    queued = redis.lrange(samples.SAMPLES_KEY, 0, -1)
    assert len(queued) == 1
    assert b"jane" not in queued[0] and b"4111 1111" not in queued[0]  # redacted in the gateway
    assert drain_samples() == 1
    drain_ledger()
    sample = ContentSample.objects.get()
    assert sample.request_id == answer.headers["x-switchboard-request-id"]
    assert sample.messages == [MESSAGES[0], {"role": "user", "content": REDACTED}]
    assert sample.completion == f"Simulated aimlapi gpt-4o-mini answer: {REDACTED}"
    assert (sample.end_user, sample.route, sample.provider, sample.model) == (
        "u-1001",
        "summary",
        "aimlapi",
        "gpt-4o-mini",
    )
    assert sample.status == "ok" and sample.redacted and not sample.streamed
    # The ledger still holds metadata only.
    record = UsageRecord.objects.get()
    assert record.context == {"meeting_type": "sales"}
    assert "jane" not in orjson.dumps(model_to_dict(record), default=str).decode()


def test_a_streamed_answer_is_kept_with_its_assembled_text(
    openai_client: openai.OpenAI, settings: Settings
) -> None:
    sampling(settings, 1.0)

    chunks = openai_client.chat.completions.create(
        model="anthropic/claude-3-5-haiku-latest", messages=MESSAGES, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    drain_samples()
    sample = ContentSample.objects.get()
    assert sample.streamed and sample.provider == "anthropic"
    assert PERSONAL in text
    assert sample.completion == text.replace(PERSONAL, REDACTED)


def test_a_request_opts_out_of_sampling_with_store_sample_false(
    openai_client: openai.OpenAI, settings: Settings, redis: Redis
) -> None:
    sampling(settings, 1.0)

    openai_client.chat.completions.create(
        model="summary", messages=MESSAGES, metadata={"store_sample": "false"}
    )
    openai_client.chat.completions.create(
        model="summary",
        messages=MESSAGES,
        extra_headers={"X-Switchboard-Store-Sample": "False"},
    )

    assert "jane" not in stored_anywhere(redis)
    assert UsageRecord.objects.count() == 2
    assert not ContentSample.objects.exists()


def test_a_healthcare_request_is_never_sampled(
    openai_client: openai.OpenAI, settings: Settings, redis: Redis
) -> None:
    sampling(settings, 1.0)

    openai_client.chat.completions.create(
        model="summary", messages=MESSAGES, metadata={"industry": "healthcare"}
    )

    assert "jane" not in stored_anywhere(redis)
    assert UsageRecord.objects.get().provider == "anthropic"  # the demo's BAA provider
    assert not ContentSample.objects.exists()


def test_a_failed_request_leaves_no_sample(
    openai_client: openai.OpenAI, settings: Settings, demo: SimulatorHandle
) -> None:
    sampling(settings, 1.0)
    for provider in ("aimlapi", "openai", "google", "anthropic"):
        demo.fault(provider=provider, mode="error", status=401)

    with pytest.raises(openai.APIStatusError):
        openai_client.chat.completions.create(model="summary", messages=MESSAGES)

    drain_samples()
    assert drain_ledger() == 1
    assert not ContentSample.objects.exists()


@pytest.mark.parametrize(
    ("body", "end_user", "context"),
    [
        ({"user": "u-1"}, "u-1", {}),
        ({"metadata": {"user_id": "u-2", "language": "en"}}, "u-2", {"language": "en"}),
        ({"metadata": {"user": "u-3"}}, "u-3", {}),
        ({"user": "u-4", "metadata": {"user_id": "u-5"}}, "u-4", {}),
        ({"metadata": {"language": "en"}}, "", {"language": "en"}),
    ],
)
def test_the_end_user_comes_from_the_user_field_or_metadata_and_leaves_the_context(
    demo: SimulatorHandle, body: dict[str, Any], end_user: str, context: dict[str, str]
) -> None:
    EnhancedHybridAIClient().complete(model="summary", messages=MESSAGES, **body)

    drain_ledger()
    record = UsageRecord.objects.get()
    assert (record.end_user, record.context) == (end_user, context)


def test_parts_that_cannot_be_redacted_are_not_kept() -> None:
    entry = UsageEntry(request_id="r1", created=datetime(2026, 11, 27, tzinfo=UTC), status="ok")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "Who is a@b.io?"}, image]}]

    sample = samples.sample(entry, messages, "Nobody.")

    assert sample.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Who is [email]?"},
                {"type": "image_url", "omitted": True},
            ],
        }
    ]


def test_sampling_keeps_about_the_configured_share() -> None:
    kept = sum(samples.wanted(0.25, {}) for _ in range(4000))

    assert 800 < kept < 1200
    assert not any(samples.wanted(0.0, {"store_sample": "true"}) for _ in range(100))
    assert not any(samples.wanted(1.0, {"store_sample": "no"}) for _ in range(100))


@pytest.mark.django_db
def test_samples_older_than_the_retention_period_are_purged(settings: Settings) -> None:
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "SAMPLE_RETENTION_DAYS": 30}
    start = datetime(2026, 11, 1, 12, tzinfo=UTC)
    for days in (0, 10, 29, 31, 45):
        ContentSample.objects.create(
            request_id=f"r{days}", created=start - timedelta(days=days), status="ok"
        )

    with time_machine.travel(start, tick=False):
        assert purge_expired_samples() == 2
    assert set(ContentSample.objects.values_list("request_id", flat=True)) == {"r0", "r10", "r29"}

    with time_machine.travel(start + timedelta(days=2), tick=False):
        assert purge_expired_samples() == 1  # r29 is now 31 days old
    assert ContentSample.objects.count() == 2


def test_the_purge_runs_every_hour_and_the_drain_every_few_seconds() -> None:
    from project.cron import PERIODIC_JOBS

    jobs = dict(PERIODIC_JOBS)
    assert jobs["billing.jobs.purge_expired_samples"] == 3600
    assert jobs["billing.jobs.drain_samples"] <= 10
