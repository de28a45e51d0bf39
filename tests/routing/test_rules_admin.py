"""The admin of routing rules, strategies and live numbers, and the decision on a usage record."""

from __future__ import annotations

import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from billing.models import UsageRecord
from routing.models import Deployment, RoutingRule
from tests.factories import drain_ledger
from tests.servers import SimulatorHandle


@pytest.fixture
def staff(transactional_db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


def rule_form(**fields: str | list[str]) -> dict[str, str | list[str]]:
    return {"name": "a rule", "priority": "50", "enabled": "on", **fields}


def test_a_rule_added_in_the_admin_takes_comma_separated_names(
    staff: Client, demo: SimulatorHandle
) -> None:
    response = staff.post(
        reverse("admin:routing_routingrule_add"),
        rule_form(
            meeting_types="Executive, sales",
            participant_bands=["6-10", "11+"],
            prefer="anthropic, aimlapi/gpt-4o",
            max_tokens="400",
            max_tokens_per_participant="60",
            max_tokens_cap="2000",
        ),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    rule = RoutingRule.objects.get(name="a rule")
    assert rule.meeting_types == ["executive", "sales"]
    assert rule.participant_bands == ["6-10", "11+"]
    assert rule.prefer == ["anthropic", "aimlapi/gpt-4o"]
    listed = staff.get(reverse("admin:routing_routingrule_changelist")).content.decode()
    assert "meeting executive, sales; participants 6-10, 11+" in listed
    assert "prefer anthropic, aimlapi/gpt-4o; max_tokens 400 + 60 a head, at most 2000" in listed


def test_a_nonsensical_rule_is_refused_by_the_admin_naming_each_problem(
    staff: Client, demo: SimulatorHandle
) -> None:
    response = staff.post(
        reverse("admin:routing_routingrule_add"),
        rule_form(
            route="nowhere", only="nobody", min_transcript_chars="10", max_transcript_chars="5"
        ),
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "there is no route &#x27;nowhere&#x27;" in page
    assert "nobody: neither a provider nor a provider/model" in page
    assert "nothing could match" in page
    assert not RoutingRule.objects.filter(name="a rule").exists()


def test_the_deployment_list_shows_its_cap_and_live_numbers(
    staff: Client, openai_client: openai.OpenAI
) -> None:
    Deployment.objects.filter(provider__name="aimlapi", name="gpt-4o-mini").update(
        max_concurrency=4
    )
    openai_client.chat.completions.create(
        model="summary", messages=[{"role": "user", "content": "Hi."}]
    )

    page = staff.get(reverse("admin:routing_deployment_changelist")).content.decode()

    assert "0/4 in flight" in page
    assert " ms, 0% errors, quality -" in page


def test_a_usage_record_shows_its_routing_decision_readably(
    staff: Client, openai_client: openai.OpenAI
) -> None:
    openai_client.chat.completions.create(
        model="summary",
        messages=[{"role": "user", "content": "Hi."}],
        metadata={"meeting_type": "executive", "participants": "9"},
    )
    drain_ledger()
    record = UsageRecord.objects.get()

    page = staff.get(reverse("admin:billing_usagerecord_change", args=[record.pk])).content.decode()

    assert "Routing decision" in page
    assert "<strong>executive-meetings</strong> (priority 10): meeting type executive" in page
    assert "large-meetings: max_tokens 940" in page
    assert "Ranking: ordered" in page
    assert "aimlapi/gpt-4o" in page
