"""A client key's organisation: its industry and languages apply to every request of the key.

In the demo configuration only Anthropic has a signed BAA.
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path

import openai
import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.backends.signals import connection_created

from billing.models import UsageRecord
from routing.actions import create_client_key, export_config, rotate_client_key
from routing.client import EnhancedHybridAIClient, forget_cached_state
from routing.context import build
from routing.models import ClientKey, Organisation
from routing.schema import ChatRequest
from routing.table import KeyInfo
from tests.factories import chat, drain_ledger
from tests.routing.test_client import QueryCounter
from tests.servers import SimulatorHandle

TRANSCRIPT = """Dr. Okafor: Good morning. Yesterday I finished the discharge letters for ward B.
Nurse Ellis: Today I'm on the medication round, no blockers.
Dr. Okafor: Anything blocking anyone? No? Then see you tomorrow."""


def key_of(organisation: Organisation, name: str = "clinic") -> str:
    _, raw = create_client_key(name, ["chat", "usage:read"], organisation=organisation)
    return raw


def ask(gateway: str, key: str, **metadata: str) -> str:
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="summary", metadata=metadata, **chat()
    )
    return raw.headers["x-switchboard-provider"]


def test_the_organisations_industry_is_the_contexts_when_the_client_does_not_say() -> None:
    key = KeyInfo(1, "clinic", frozenset({"chat"}), "prod", industry="healthcare")
    request = ChatRequest(model="summary", messages=[{"role": "user", "content": "Hi"}])

    context = build(request, key)

    assert (context.industry, context.sources["industry"]) == ("healthcare", "key")
    stated = ChatRequest(model="summary", messages=request.messages, metadata={"industry": "x"})
    assert build(stated, key).industry == "x"


def test_a_healthcare_organisations_keys_reach_only_baa_providers_without_metadata(
    gateway: str, demo: SimulatorHandle
) -> None:
    clinic = Organisation.objects.create(name="Northside Clinic", industry="healthcare")
    retailer = Organisation.objects.create(name="Shopwise", industry="retail")

    assert ask(gateway, key_of(clinic)) == "anthropic"
    # A client cannot talk its way out of its organisation's rule.
    assert ask(gateway, key_of(clinic, "clinic-2"), industry="retail") == "anthropic"
    assert ask(gateway, key_of(retailer, "shop")) == "aimlapi"
    assert demo.count("anthropic") == 2

    drain_ledger()
    record = UsageRecord.objects.filter(client_key_name="clinic").get()
    assert record.decision["context"]["industry"] == "healthcare"
    assert record.decision["context"]["sources"]["industry"] == "key"


def test_changing_an_organisations_industry_applies_to_its_keys_at_once(
    gateway: str, demo: SimulatorHandle
) -> None:
    organisation = Organisation.objects.create(name="Hillside", industry="education")
    key = key_of(organisation)
    assert ask(gateway, key) == "aimlapi"

    organisation.industry = "healthcare"
    organisation.save()

    assert ask(gateway, key) == "anthropic"


def test_the_organisations_languages_restrict_detection() -> None:
    spanish = "Buenos días a todos. Ayer terminé el informe y hoy empiezo con las pruebas."
    request = ChatRequest(model="summary", messages=[{"role": "user", "content": spanish}])
    served = KeyInfo(1, "k", frozenset({"chat"}), "prod", languages=("es", "en"))
    elsewhere = KeyInfo(1, "k", frozenset({"chat"}), "prod", languages=("de",))

    assert build(request, served).language == "es"
    assert build(request, elsewhere).language == ""


def test_a_warm_request_of_an_organisations_key_makes_no_database_query(
    demo: SimulatorHandle,
) -> None:
    clinic = Organisation.objects.create(name="Clinic", industry="healthcare", languages=["en"])
    client = EnhancedHybridAIClient(key=key_of(clinic))
    messages = [{"role": "user", "content": TRANSCRIPT}]
    counter = QueryCounter()
    connection_created.connect(counter.install)
    connection.close()
    try:
        forget_cached_state()
        client.complete(model="summary", messages=messages)
        assert counter.count > 0, "the cold request read the routing table (the counter works)"
        counter.count = 0

        for _ in range(3):
            client.complete(model="summary", messages=messages)

        assert counter.count == 0
    finally:
        connection_created.disconnect(counter.install)
    drain_ledger()
    context = UsageRecord.objects.last().decision["context"]  # type: ignore[union-attr]
    assert (context["industry"], context["meeting_type"], context["language"]) == (
        "healthcare",
        "standup",
        "en",
    )


@pytest.mark.django_db
def test_a_rotated_key_keeps_its_organisation() -> None:
    organisation = Organisation.objects.create(name="Acme", industry="finance")
    key, _ = create_client_key("acme", ["chat"], organisation=organisation)

    successor, _ = rotate_client_key(key, timedelta(hours=1))

    assert successor.organisation == organisation


@pytest.mark.django_db
def test_languages_must_be_two_letter_codes() -> None:
    with pytest.raises(ValidationError):
        Organisation(name="x", languages=["english"]).full_clean()
    Organisation(name="x", languages=["en", "pt"]).full_clean()


@pytest.mark.django_db
def test_organisations_are_configuration_as_code(tmp_path: Path) -> None:
    create_client_key("clinic-api", ["chat"])
    create_client_key("clinic-batch", ["chat"])
    path = tmp_path / "switchboard.yaml"
    path.write_text(
        "organisations:\n"
        "  Northside Clinic:\n"
        "    industry: healthcare\n"
        "    languages: [en, es]\n"
        "    keys: [clinic-api, clinic-batch]\n"
    )

    call_command("import_config", str(path), stdout=StringIO())
    call_command("import_config", str(path), stdout=StringIO())  # idempotent

    organisation = Organisation.objects.get()
    assert (organisation.industry, organisation.languages) == ("healthcare", ["en", "es"])
    assert {k.organisation for k in ClientKey.objects.all()} == {organisation}
    assert export_config()["organisations"] == {
        "Northside Clinic": {
            "industry": "healthcare",
            "languages": ["en", "es"],
            "keys": ["clinic-api", "clinic-batch"],
        }
    }
    assert yaml.safe_load(yaml.safe_dump(export_config()))["organisations"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    industry: plumbing\n", "organisations.Clinic.industry: must be one of"),
        ("    languages: [english]\n", "'english' is not a two-letter"),
        ("    keys: [nobody]\n", "no active client key is named 'nobody'"),
        ("    colour: blue\n", "organisations.Clinic.colour: unknown field"),
    ],
)
def test_a_bad_organisation_in_the_file_is_refused_naming_it(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "switchboard.yaml"
    path.write_text("organisations:\n  Clinic:\n" + body)

    with pytest.raises(CommandError, match=message):
        call_command("import_config", str(path), stdout=StringIO())
    assert not Organisation.objects.exists()


@pytest.mark.django_db
def test_create_client_key_can_name_the_organisation() -> None:
    Organisation.objects.create(name="Shopwise", industry="retail")
    call_command(
        "create_client_key", "--name", "shop", "--organisation", "Shopwise", stdout=StringIO()
    )
    assert ClientKey.objects.get().organisation.name == "Shopwise"  # type: ignore[union-attr]

    with pytest.raises(CommandError, match="No organisation is named 'Nope'"):
        call_command("create_client_key", "--name", "x", "--organisation", "Nope")
