"""The audit log: who changed which provider, route, key, budget, price or channel, and how."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client

from billing.actions import upsert_budget
from billing.models import Budget
from project.auditing import SECRET, TRACKED
from project.models import Channel
from project.roles import ROLES
from routing.actions import create_client_key, import_config
from routing.config import parse
from routing.models import ClientKey, Provider, ProviderCredential, Route, RouteStep
from tests.factories import make_client_key

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "switchboard.example.yaml"
AUDIT_LOG = "/admin/auditlog/logentry/"


def member_of(role: str) -> tuple[Client, User]:
    user = User.objects.create_user(
        role.lower(), f"{role.lower()}@example.com", "pw", is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client, user


def make_provider(**fields: Any) -> Provider:
    return Provider.objects.create(
        **{
            "name": "openai",
            "protocol": "openai",
            "base_url": "https://api.openai.com/v1",
            **fields,
        }
    )


def provider_form(provider: Provider, **changes: Any) -> dict[str, Any]:
    """The provider change form as the admin posts it, with its three empty inlines."""
    data = {
        "name": provider.name,
        "protocol": provider.protocol,
        "base_url": provider.base_url,
        "vendor": provider.vendor,
        "data_region": provider.data_region,
        "priority": provider.priority,
        "connect_timeout": provider.connect_timeout,
        "read_timeout": provider.read_timeout,
        "enabled": "on" if provider.enabled else "",
    }
    for inline in ("credentials", "plan", "deployments"):
        data |= {
            f"{inline}-TOTAL_FORMS": 0,
            f"{inline}-INITIAL_FORMS": 0,
            f"{inline}-MIN_NUM_FORMS": 0,
            f"{inline}-MAX_NUM_FORMS": 1000,
        }
    return data | changes


def form_errors(response: Any) -> object:
    return response.context and response.context["adminform"].form.errors


def entries_for(obj: Any) -> list[LogEntry]:
    return list(LogEntry.objects.get_for_object(obj).order_by("timestamp", "id"))


def dump_audit_log() -> str:
    """Every row of the audit log table, as text."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{LogEntry._meta.db_table}"')
        return "\n".join(repr(row) for row in cursor.fetchall())


def test_an_admin_changing_a_provider_in_the_admin_is_recorded_with_who_and_which_fields() -> None:
    provider = make_provider()
    admin, user = member_of("Administrator")

    response = admin.post(
        f"/admin/routing/provider/{provider.pk}/change/",
        provider_form(provider, priority=10, baa_signed="on"),
    )

    assert response.status_code == 302, form_errors(response)
    entry = entries_for(provider)[-1]
    assert entry.action == LogEntry.Action.UPDATE
    assert entry.actor == user
    assert entry.changes_dict["priority"] == [100, 10]
    assert set(entry.changes_dict) == {"priority", "baa_signed"}


def test_a_credential_given_in_the_admin_is_recorded_by_its_last_four_only() -> None:
    provider = make_provider()
    admin, user = member_of("Administrator")

    response = admin.post(
        "/admin/routing/providercredential/add/",
        {
            "provider": provider.pk,
            "environment": "prod",
            "secret": "sk-new-secret-key-6789",
            "rotation_days": 30,
            "enabled": "on",
        },
    )

    assert response.status_code == 302, form_errors(response)
    [entry] = entries_for(ProviderCredential.objects.get())
    assert entry.actor == user
    assert entry.changes_dict["secret_last4"] == [None, "6789"]
    assert entry.changes_dict["secret_encrypted"] == [None, "[redacted]"]
    assert "sk-new-secret" not in dump_audit_log()


def test_a_client_key_created_by_the_action_is_recorded_without_its_hash() -> None:
    key, raw = create_client_key("notes-service", ["chat"], "staging")

    [entry] = entries_for(key)
    assert entry.action == LogEntry.Action.CREATE
    assert entry.actor is None  # no signed-in user: shown as "system"
    assert entry.changes_dict["name"] == [None, "notes-service"]
    assert entry.changes_dict["prefix"] == [None, key.prefix]
    assert "key_hash" not in entry.changes_dict
    assert key.key_hash not in dump_audit_log() and raw not in dump_audit_log()


def test_revoking_a_key_in_the_admin_is_recorded_although_it_is_a_conditional_update() -> None:
    make_client_key("notes-service")
    key = ClientKey.objects.get()
    admin, user = member_of("Administrator")

    admin.post("/admin/routing/clientkey/", {"action": "revoke", "_selected_action": [key.pk]})

    entry = entries_for(key)[-1]
    assert entry.action == LogEntry.Action.UPDATE and entry.actor == user
    old, new = entry.changes_dict["revoked_at"]
    assert old is None and new.startswith(f"{ClientKey.objects.get().revoked_at:%Y-%m-%d %H:%M}")


def test_changing_a_budget_records_the_old_and_new_amount() -> None:
    fields: dict[str, Any] = {"scope": "global", "scope_ref": "", "period": "monthly", "hard": True}
    upsert_budget(**fields, amount_usd=Decimal("100"), alert_at=[70, 85, 95])

    upsert_budget(**fields, amount_usd=Decimal("150"), alert_at=[80])

    entry = entries_for(Budget.objects.get())[-1]
    assert entry.action == LogEntry.Action.UPDATE
    old, new = entry.changes_dict["amount_usd"]
    assert (Decimal(old), Decimal(new)) == (Decimal("100"), Decimal("150"))
    assert entry.changes_dict["alert_at"] == [[70, 85, 95], [80]]


def test_a_finance_user_changing_a_budget_in_the_admin_is_named_in_the_log() -> None:
    budget = Budget.objects.create(scope="global", period="monthly", amount_usd=Decimal("100"))
    finance, user = member_of("Finance")

    response = finance.post(
        f"/admin/billing/budget/{budget.pk}/change/",
        {
            "scope": "global",
            "scope_ref": "",
            "period": "monthly",
            "amount_usd": "250",
            "alert_at": "[70, 85, 95]",
            "degrade_at_pct": "",
            "created_0": f"{budget.created:%Y-%m-%d}",
            "created_1": f"{budget.created:%H:%M:%S}",
        },
    )

    assert response.status_code == 302, form_errors(response)
    entry = entries_for(budget)[-1]
    assert entry.actor == user
    assert [Decimal(v) for v in entry.changes_dict["amount_usd"]] == [100, 250]


def test_a_route_chain_changed_by_import_config_is_recorded_step_by_step() -> None:
    import_config(parse(EXAMPLE.read_text()))
    shorter = EXAMPLE.read_text().replace(
        ", google/gemini-2.0-flash, anthropic/claude-3-5-haiku-latest]", "]"
    )

    import_config(parse(shorter))

    steps = LogEntry.objects.get_for_model(RouteStep)
    assert steps.filter(action=LogEntry.Action.DELETE).count() == 4
    assert steps.filter(action=LogEntry.Action.CREATE).count() == 4 + 2
    assert Route.objects.get().chain()[-1].name == "gpt-4o-mini"


def test_a_webhook_channel_is_logged_by_its_host_and_an_email_channel_whole() -> None:
    url = "https://hooks.slack.com/services/T000/B000/webhook-token-abc"
    webhook = Channel.objects.create(kind="webhook", name="ops", target=url)
    email = Channel.objects.create(kind="email", name="finance", target="finance@example.com")

    webhook.target = url.replace("abc", "xyz")
    webhook.save()

    created = entries_for(webhook)[0].changes_dict
    assert created["target_shown"] == [None, "https://hooks.slack.com/…"]
    assert created["target_encrypted"] == [None, "[redacted]"]
    changed = entries_for(webhook)[-1].changes_dict
    assert changed == {"target_encrypted": ["[redacted]", "[redacted]"]}  # changed; not to what
    assert entries_for(email)[0].changes_dict["target_shown"] == [None, "finance@example.com"]
    assert "webhook-token" not in dump_audit_log()


def test_the_audit_log_holds_no_provider_secret() -> None:
    credential = ProviderCredential(provider=make_provider())
    secrets = ["sk-first-secret-0123456789", "sk-second-secret-9876543210"]
    ciphertexts = []
    for secret in secrets:
        credential.set_secret(secret)
        credential.save()
        ciphertexts.append(credential.secret_encrypted)
    credential.provider.delete()

    dump = dump_audit_log()
    assert "[redacted]" in dump and "6789" in dump  # recorded, as its last four only
    for text in secrets + ciphertexts:
        assert text not in dump and text[len(text) // 2 :] not in dump


def test_every_secret_looking_field_of_a_tracked_model_is_excluded_or_redacted() -> None:
    # A key's last four characters are shown everywhere on purpose; the rest is not.
    secret_like = re.compile(r"secret(?!_last4)|hash|encrypted|password|(^|_)token(_|$)")
    for model in auditlog.get_models():
        options = auditlog.get_model_fields(model)
        for field in model._meta.concrete_fields:
            if secret_like.search(field.name):
                assert field.name in options["exclude_fields"] or (
                    field.name in options["mask_fields"] and options["mask_callable"] == SECRET
                ), f"{model._meta.label}.{field.name} would be written to the audit log"


def test_every_model_named_for_the_audit_log_is_tracked() -> None:
    assert {m._meta.label_lower for m in auditlog.get_models()} >= {
        apps.get_model(label)._meta.label_lower for label in TRACKED
    }


@pytest.mark.parametrize("role", [role for role in ROLES if role != "Administrator"])
def test_the_audit_log_is_refused_to_every_role_but_administrator(role: str) -> None:
    provider = make_provider()
    client, _ = member_of(role)

    assert client.get(AUDIT_LOG).status_code == 403
    assert client.get(f"/admin/routing/provider/{provider.pk}/auditlog/").status_code == 403


def test_anonymous_is_sent_to_the_login_page_from_the_audit_log() -> None:
    response = Client().get(AUDIT_LOG)

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_administrator_reads_the_audit_log_and_each_objects_history() -> None:
    provider = make_provider(priority=50)
    provider.priority = 5
    provider.save()
    admin, _ = member_of("Administrator")

    listing = admin.get(AUDIT_LOG)
    change_page = admin.get(f"/admin/routing/provider/{provider.pk}/change/")
    history = admin.get(f"/admin/routing/provider/{provider.pk}/auditlog/")

    assert listing.status_code == 200 and b"openai" in listing.content
    assert f"/admin/routing/provider/{provider.pk}/auditlog/".encode() in change_page.content
    assert history.status_code == 200 and b"priority" in history.content.lower()


def test_an_operator_sees_no_audit_log_button_on_a_provider() -> None:
    provider = make_provider()
    operator, _ = member_of("Operator")

    change_page = operator.get(f"/admin/routing/provider/{provider.pk}/change/")

    assert change_page.status_code == 200
    assert b"/auditlog/" not in change_page.content


def test_a_created_provider_is_recorded_by_its_own_fields_not_its_related_rows() -> None:
    provider = make_provider()

    [entry] = entries_for(provider)
    assert entry.changes_dict["name"] == [None, "openai"]
    assert "deployments" not in entry.changes_dict and "plan" not in entry.changes_dict
