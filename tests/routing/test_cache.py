"""The response cache: deterministic requests answered again at no cost, per key, for a while."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import openai
import orjson
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from billing.models import UsageRecord
from routing.models import ClientKey, Route
from tests.factories import drain_ledger, make_client_key
from tests.servers import SimulatorHandle

MESSAGES = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


def ask(client: openai.OpenAI, **body: Any) -> Any:
    body = {"model": "summary", "messages": MESSAGES, **body}
    return client.chat.completions.with_raw_response.create(**body)


def cache_settings(**values: Any) -> Any:
    return override_settings(SWITCHBOARD={**settings.SWITCHBOARD, **values})


def test_a_deterministic_request_is_answered_from_the_cache_at_no_cost(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    first = ask(openai_client, temperature=0)
    second = ask(openai_client, temperature=0)

    assert first.headers["x-switchboard-cache"] == "miss"
    assert second.headers["x-switchboard-cache"] == "hit"
    assert second.headers["x-switchboard-cost-usd"] == "0"
    assert second.headers["x-switchboard-attempts"] == "0"
    assert second.headers["x-switchboard-provider"] == "aimlapi"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().usage == first.parse().usage
    assert demo.count("aimlapi") == 1
    assert drain_ledger() == 2
    miss, hit = UsageRecord.objects.order_by("created")
    assert (miss.cache_hit, miss.cost_usd > 0) == (False, True)
    assert (hit.cache_hit, hit.deduplicated, hit.cost_usd) == (True, False, Decimal(0))
    assert (hit.provider, hit.model, hit.prompt_tokens) == ("aimlapi", "gpt-4o-mini", 0)
    assert hit.context["answer_of"] == miss.request_id


def test_a_request_that_samples_is_not_cached_unless_it_asks(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    ask(openai_client, temperature=0.7)
    assert ask(openai_client, temperature=0.7).headers["x-switchboard-cache"] == "miss"
    assert ask(openai_client).headers["x-switchboard-cache"] == "miss"  # no temperature: 1

    ask(openai_client, temperature=0.7, metadata={"cache": "true"})
    asked = ask(openai_client, temperature=0.7, metadata={"cache": "true"})

    assert asked.headers["x-switchboard-cache"] == "hit"
    assert demo.count("aimlapi") == 4


def test_metadata_cache_false_opts_a_deterministic_request_out(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    ask(openai_client, temperature=0, metadata={"cache": "false"})
    again = ask(openai_client, temperature=0, metadata={"cache": "false"})

    assert again.headers["x-switchboard-cache"] == "miss"
    assert demo.count("aimlapi") == 2


def test_requests_that_differ_in_any_parameter_are_different_entries(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    ask(openai_client, temperature=0)
    assert ask(openai_client, temperature=0, max_tokens=5).headers["x-switchboard-cache"] == "miss"
    other = [{"role": "user", "content": "Summarise: we ship on Monday."}]
    assert (
        ask(openai_client, temperature=0, messages=other).headers["x-switchboard-cache"] == "miss"
    )
    # The same request, spelled differently (0.0 for 0, another end user), is the same entry.
    assert ask(openai_client, temperature=0.0, user="u-2").headers["x-switchboard-cache"] == "hit"
    assert demo.count("aimlapi") == 3


def test_a_cached_answer_is_served_as_a_stream(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    whole = ask(openai_client, temperature=0).parse()

    stream = openai_client.chat.completions.with_raw_response.create(
        model="summary",
        messages=MESSAGES,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream.parse())

    assert stream.headers["x-switchboard-cache"] == "hit"
    assert stream.headers["content-type"].startswith("text/event-stream")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage == whole.usage
    assert demo.count("aimlapi") == 1
    drain_ledger()
    hit = UsageRecord.objects.get(cache_hit=True)
    assert hit.streamed and hit.cost_usd == 0


def test_a_stream_that_ends_well_fills_the_cache(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    streamed = openai_client.chat.completions.create(
        model="summary", messages=MESSAGES, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)

    again = ask(openai_client, temperature=0)

    assert again.headers["x-switchboard-cache"] == "hit"
    answer = again.parse()
    assert answer.choices[0].message.content == text
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert demo.count("aimlapi") == 1


def test_a_cut_stream_is_not_cached(openai_client: openai.OpenAI, demo: SimulatorHandle) -> None:
    demo.fault(provider="aimlapi", mode="stream_cut", times=1)
    with pytest.raises(openai.APIError):
        for _ in openai_client.chat.completions.create(
            model="summary", messages=MESSAGES, temperature=0, stream=True
        ):
            pass

    assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "miss"


def test_an_entry_expires_after_its_ttl(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    with cache_settings(CACHE_TTL_SECONDS=1):
        ask(openai_client, temperature=0)
        assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "hit"
        time.sleep(1.1)
        assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "miss"

    assert demo.count("aimlapi") == 2


def test_the_cache_keeps_at_most_its_size_the_least_recently_used_going_first(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Any
) -> None:
    questions = [[{"role": "user", "content": f"Summarise meeting {n}."}] for n in range(3)]
    with cache_settings(CACHE_MAX_ENTRIES=2):
        ask(openai_client, temperature=0, messages=questions[0])
        ask(openai_client, temperature=0, messages=questions[1])
        ask(openai_client, temperature=0, messages=questions[0])  # used again: now the newest
        ask(openai_client, temperature=0, messages=questions[2])  # the oldest (1) goes

        assert len(redis.keys("sb:cache:*")) == 2
        found = [
            ask(openai_client, temperature=0, messages=questions[n]).headers["x-switchboard-cache"]
            for n in (2, 0, 1)  # the misses last: each one stored evicts another
        ]

    assert found == ["hit", "hit", "miss"]


def test_an_answer_too_large_for_an_entry_is_not_kept(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    with cache_settings(CACHE_MAX_ENTRY_BYTES=100):
        ask(openai_client, temperature=0)
        assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "miss"


def test_one_keys_answers_are_never_served_to_another(
    gateway: str, openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    other = openai.OpenAI(
        base_url=f"{gateway}/v1", api_key=make_client_key("other-service"), max_retries=0
    )
    ask(openai_client, temperature=0)

    with other:
        theirs = ask(other, temperature=0)
        assert theirs.headers["x-switchboard-cache"] == "miss"
        assert ask(other, temperature=0).headers["x-switchboard-cache"] == "hit"

    assert demo.count("aimlapi") == 2


def test_a_cache_hit_is_served_even_when_the_budget_is_spent(
    openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    from billing.models import Budget

    ask(openai_client, temperature=0)
    Budget.objects.filter(scope="global").update(amount_usd=Decimal("0.0000000001"))
    Budget.objects.get(scope="global").save()  # bump the table version

    assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "hit"
    with pytest.raises(openai.RateLimitError):
        ask(openai_client, temperature=0, max_tokens=7)


def test_purge_by_route_or_key_from_the_command_line(
    gateway: str, openai_client: openai.OpenAI, demo: SimulatorHandle
) -> None:
    ask(openai_client, temperature=0)
    ask(openai_client, temperature=0, model="fallback-demo")

    call_command("purge_cache", "--route", "summary", stdout=(out := _Buffer()))

    assert "1 cached answer" in out.text
    assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "miss"
    assert (
        ask(openai_client, model="fallback-demo", temperature=0).headers["x-switchboard-cache"]
        == "hit"
    )

    key = ClientKey.objects.get()
    call_command("purge_cache", "--key", key.prefix, stdout=(out := _Buffer()))
    assert "2 cached answers" in out.text
    assert (
        ask(openai_client, model="fallback-demo", temperature=0).headers["x-switchboard-cache"]
        == "miss"
    )


def test_an_admin_purges_a_routes_or_a_keys_answers(
    openai_client: openai.OpenAI, demo: SimulatorHandle, admin_client: Any
) -> None:
    ask(openai_client, temperature=0)
    route = Route.objects.get(name="summary")

    response = admin_client.post(
        "/admin/routing/route/",
        {"action": "purge_cache", "_selected_action": [route.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "1 cached answer" in response.content.decode()
    assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "miss"
    key = ClientKey.objects.get()
    response = admin_client.post(
        "/admin/routing/clientkey/",
        {"action": "purge_cache", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "1 cached answer" in response.content.decode()
    assert ask(openai_client, temperature=0).headers["x-switchboard-cache"] == "miss"


def test_a_healthcare_request_is_never_cached(
    openai_client: openai.OpenAI, demo: SimulatorHandle, redis: Any
) -> None:
    healthcare = {"industry": "healthcare"}
    ask(openai_client, temperature=0, metadata=healthcare)
    again = ask(openai_client, temperature=0, metadata={**healthcare, "cache": "true"})

    assert again.headers["x-switchboard-cache"] == "miss"
    assert not redis.keys("sb:cache*") and not redis.keys("sb:flight*")
    assert demo.count("anthropic") == 2


def test_in_process_callers_share_a_cache_per_environment(demo: SimulatorHandle) -> None:
    from routing.client import EnhancedHybridAIClient

    client = EnhancedHybridAIClient()
    first = client.complete(model="summary", messages=MESSAGES, temperature=0)
    second = client.complete(model="summary", messages=MESSAGES, temperature=0)

    assert second == first
    assert demo.count("aimlapi") == 1
    drain_ledger()
    assert UsageRecord.objects.filter(cache_hit=True).count() == 1


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, value: str) -> None:
        self.text += value

    def flush(self) -> None:
        pass


def test_the_cache_key_ignores_order_and_end_users_but_not_the_routing_context() -> None:
    from routing.cache import fingerprint
    from routing.schema import validate_chat_body

    def key(**body: Any) -> str:
        return fingerprint("summary", validate_chat_body({"model": "summary", **body}))

    base = {"messages": MESSAGES, "temperature": 0, "max_tokens": 10}
    assert key(**base) == key(max_tokens=10, temperature=0.0, messages=MESSAGES)
    assert key(**base) == key(**base, user="someone", metadata={"user_id": "u1"})
    assert key(**base) == key(**base, metadata={"cache": "true"})
    assert key(**base) != key(**base, metadata={"industry": "healthcare"})
    assert key(**base) != key(**{**base, "max_tokens": 11})
    assert orjson.dumps(base)  # the request itself is untouched
