"""import_config / export_config / create_client_key, as an operator runs them."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from billing.models import Budget
from routing.models import ClientKey, Deployment, Provider, ProviderCredential, Route, hash_key

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "switchboard.example.yaml"

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def snapshot() -> list[tuple]:
    return [
        *Provider.objects.values_list(),
        *Deployment.objects.values_list(),
        *Route.objects.values_list(),
        *Budget.objects.values_list(),
    ]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "switchboard.yaml"
    path.write_text(text)
    return str(path)


def test_the_design_documents_example_loads_with_list_prices_from_genai_prices() -> None:
    run("import_config", str(EXAMPLE))

    assert list(Provider.objects.values_list("name", flat=True)) == [
        "aimlapi",
        "openai",
        "google",
        "anthropic",
    ]
    aimlapi = Deployment.objects.get(provider__name="aimlapi")
    assert aimlapi.input_usd_per_mtok == Decimal("0.06")
    assert aimlapi.price_source == "config"
    openai = Deployment.objects.get(provider__name="openai")
    assert openai.price_source == "genai-prices"
    assert openai.input_usd_per_mtok == Decimal("0.15")
    assert [str(d) for d in Route.objects.get(name="summary").chain()] == [
        "aimlapi/gpt-4o-mini",
        "openai/gpt-4o-mini",
        "google/gemini-2.0-flash",
        "anthropic/claude-3-5-haiku-latest",
    ]
    budget = Budget.objects.get()
    assert (budget.amount_usd, budget.hard, budget.alert_at) == (Decimal(5000), True, [70, 85, 95])


def test_importing_twice_changes_nothing() -> None:
    run("import_config", str(EXAMPLE))
    before = snapshot()

    output = run("import_config", str(EXAMPLE))

    assert snapshot() == before
    assert "created" not in output and "updated" not in output


def test_export_then_import_is_a_round_trip(tmp_path: Path) -> None:
    run("import_config", str(EXAMPLE))
    before = snapshot()
    exported = run("export_config")

    Route.objects.all().delete()
    Deployment.objects.all().delete()
    run("import_config", write(tmp_path, exported))

    assert yaml.safe_load(exported)["routes"]["summary"][0] == "aimlapi/gpt-4o-mini"
    assert len(snapshot()) == len(before)


def test_an_edit_updates_in_place(tmp_path: Path) -> None:
    run("import_config", str(EXAMPLE))
    edited = EXAMPLE.read_text().replace('input_usd_per_mtok: "0.06"', 'input_usd_per_mtok: "0.05"')

    output = run("import_config", write(tmp_path, edited))

    assert "1 model updated" in output
    assert Deployment.objects.get(provider__name="aimlapi").input_usd_per_mtok == Decimal("0.05")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "providers:\n  x: {protocol: grpc, base_url: 'http://x'}\n",
            "line 2: providers.x.protocol: must be one of",
        ),
        ("providers:\n  x: {protocol: openai}\n", "line 2: providers.x.base_url: is required"),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x'}\n"
            "models:\n  - {provider: y, name: m}\n",
            "line 4: models[0].provider: 'y' is not a provider in this file",
        ),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x'}\n"
            "models:\n  - {provider: x, name: m, input_usd_per_mtok: 0.06}\n",
            "line 4: models[0].input_usd_per_mtok: write money as a quoted string",
        ),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x'}\n"
            "routes:\n  r: [x/unknown]\n",
            "line 4: routes.r[0]: 'x/unknown' is not listed under models",
        ),
        ("providers: [\n", "not valid YAML"),
        ("flavours: {}\n", "line 1: flavours: unknown section"),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x', api_key: sk-secret,"
            " api_key_env: X}\n",
            "line 2: providers.x.api_key: give api_key or api_key_env, not both",
        ),
        (
            "providers:\n  x:\n    protocol: openai\n    base_url: 'http://x'\n"
            "    credentials:\n      - {environment: qa, api_key_env: X}\n",
            "line 6: providers.x.credentials[0].environment: must be one of dev, staging, prod",
        ),
        (
            "providers:\n  x:\n    protocol: openai\n    base_url: 'http://x'\n"
            "    credentials:\n      - {environment: prod, api_key_env: X}\n"
            "      - {environment: prod, api_key_env: Y}\n",
            "line 7: providers.x.credentials: two credentials for prod labelled ''",
        ),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x', data_region: mars}\n",
            "line 2: providers.x.data_region: must be one of us, eu, other",
        ),
        (
            "providers:\n  x: {protocol: openai, base_url: 'http://x'}\n"
            "models:\n  - {provider: x, name: m}\n"
            "routes:\n  r: {chain: [x/m], environments: [prod, qa]}\n",
            "line 6: routes.r.environments: must list some of dev, staging, prod",
        ),
        (
            "providers:\n  x:\n    protocol: openai\n    base_url: 'http://x'\n"
            "    credentials:\n      - {environment: prod}\n",
            "providers.x.credentials: the prod credential gives no api_key or api_key_env",
        ),
    ],
)
def test_a_bad_file_names_the_line_and_field_and_changes_nothing(
    tmp_path: Path, text: str, message: str
) -> None:
    run("import_config", str(EXAMPLE))
    before = snapshot()

    with pytest.raises(CommandError) as caught:
        run("import_config", write(tmp_path, text))

    assert message in str(caught.value)
    assert "Nothing was changed" in str(caught.value)
    assert "sk-secret" not in str(caught.value)
    assert snapshot() == before


def test_create_client_key_prints_the_key_alone_on_its_last_line_and_stores_its_hash() -> None:
    output = run(
        "create_client_key", "--name", "notes-service", "--scopes", "chat,usage", "--env", "staging"
    )

    raw = output.strip().splitlines()[-1]
    assert raw.startswith("sb-staging-")
    key = ClientKey.objects.get()
    assert key.key_hash == hash_key(raw)
    assert raw not in str(ClientKey.objects.values_list())
    assert key.scopes == ["chat", "usage:read"] and key.environment == "staging"


def test_create_client_key_refuses_an_unknown_scope() -> None:
    with pytest.raises(CommandError, match="Unknown scope everything"):
        run("create_client_key", "--name", "x", "--scopes", "chat,everything")
    assert not ClientKey.objects.exists()


def test_an_inline_api_key_is_stored_encrypted_used_and_never_exported(tmp_path: Path) -> None:
    from django.db import connection

    from routing.table import build_table

    secret = "sk-inline-secret-0123456789"
    text = EXAMPLE.read_text().replace("api_key_env: OPENAI_API_KEY", f"api_key: {secret}")
    run("import_config", write(tmp_path, text))

    credential = ProviderCredential.objects.get(provider__name="openai", environment="prod")
    assert credential.secret_last4 == "6789"
    assert credential.secret() == secret
    deployment = build_table(1).resolve("openai/gpt-4o-mini", "prod").chain[0]  # type: ignore[union-attr]
    assert deployment.api_key == secret
    assert secret not in repr(deployment)
    assert secret not in run("export_config")
    assert secret not in dump_database(connection)
    again = run("import_config", write(tmp_path, text))
    assert "4 provider unchanged" in again
    assert "8 credential unchanged" in again


def dump_database(connection: object) -> str:
    """Every row of every table, as text."""
    lines = []
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        for table in connection.introspection.table_names():  # type: ignore[attr-defined]
            cursor.execute(f'SELECT * FROM "{table}"')
            lines.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(lines)


def test_credentials_and_route_environments_round_trip_without_secrets(tmp_path: Path) -> None:
    secret = "sk-stored-only-0123456789"
    text = (
        "providers:\n  x:\n    protocol: openai\n    base_url: 'http://x'\n    baa_signed: true\n"
        "    data_region: eu\n    credentials:\n"
        f"      - {{environment: prod, api_key: {secret}, rotation_days: 7}}\n"
        "      - {environment: staging, api_key_env: X_STAGING, label: team-b}\n"
        "models:\n  - {provider: x, name: m, input_usd_per_mtok: '1', output_usd_per_mtok: '2'}\n"
        "routes:\n  r: {chain: [x/m], environments: [prod]}\n"
    )
    run("import_config", write(tmp_path, text))
    exported = run("export_config")

    assert secret not in exported
    assert "environments:\n    - prod" in exported and "X_STAGING" in exported
    provider = Provider.objects.get()
    assert provider.baa_signed and provider.data_region == "eu"
    before = list(ProviderCredential.objects.values_list("secret_encrypted", "rotated_at"))
    again = run("import_config", write(tmp_path, exported))  # the stored key is kept
    assert "2 credential unchanged" in again and "1 route unchanged" in again
    assert list(ProviderCredential.objects.values_list("secret_encrypted", "rotated_at")) == before
    assert ProviderCredential.objects.get(environment="prod").secret() == secret


def test_a_routes_latency_target_round_trips(tmp_path: Path) -> None:
    text = (
        "providers:\n  x: {protocol: openai, base_url: 'http://x', api_key_env: X_KEY}\n"
        "models:\n  - {provider: x, name: m, input_usd_per_mtok: '1', output_usd_per_mtok: '2'}\n"
        "routes:\n  r: {chain: [x/m], latency_target_ms: 800}\n  plain: [x/m]\n"
    )
    run("import_config", write(tmp_path, text))
    exported = run("export_config")

    assert Route.objects.get(name="r").latency_target_ms == 800
    assert Route.objects.get(name="plain").latency_target_ms is None
    assert yaml.safe_load(exported)["routes"] == {
        "r": {"chain": ["x/m"], "latency_target_ms": 800},
        "plain": ["x/m"],
    }
    assert "2 route unchanged" in run("import_config", write(tmp_path, exported))
