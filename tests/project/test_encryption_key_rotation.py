"""rotate_encryption_key: every stored secret moves to the newest key, all or nothing."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings

from project.models import Channel
from project.secrets import decrypt
from routing.models import ProviderCredential
from tests.factories import make_provider

pytestmark = pytest.mark.django_db

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def stored_tokens() -> list[str]:
    return list(ProviderCredential.objects.values_list("secret_encrypted", flat=True))


def test_it_re_encrypts_every_secret_so_the_old_key_can_be_dropped() -> None:
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[OLD]):
        make_provider("acme", {"prod": "sk-acme-prod-0123456789", "dev": "sk-acme-dev-0123456789"})
        hook = Channel.objects.create(kind="webhook", name="ops", target="https://h.example/T0K")
    before = stored_tokens()

    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[NEW, OLD]):
        out = StringIO()
        call_command("rotate_encryption_key", stdout=out)

    assert "3 secret(s) re-encrypted" in out.getvalue()
    assert "routing.ProviderCredential.secret_encrypted: 2" in out.getvalue()
    assert "project.Channel.target_encrypted: 1" in out.getvalue()
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[NEW]):
        assert Channel.objects.get(pk=hook.pk).target == "https://h.example/T0K"
    after = stored_tokens()
    assert set(after).isdisjoint(before)
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[NEW]):  # the old key is gone
        assert sorted(decrypt(token) for token in after) == [
            "sk-acme-dev-0123456789",
            "sk-acme-prod-0123456789",
        ]


def test_a_secret_no_key_decrypts_stops_it_before_anything_changes() -> None:
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[OLD]):
        make_provider("acme", {"prod": "sk-acme-prod-0123456789"})
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[NEW]):
        make_provider("other", {"prod": "sk-other-prod-0123456789"})
    before = stored_tokens()

    with (
        override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[NEW]),
        pytest.raises(CommandError, match="Nothing was changed"),
    ):
        call_command("rotate_encryption_key", stdout=StringIO())

    assert stored_tokens() == before


def test_check_reports_without_writing() -> None:
    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[OLD]):
        make_provider("acme", {"prod": "sk-acme-prod-0123456789"})
    before = stored_tokens()

    with override_settings(SWITCHBOARD_ENCRYPTION_KEYS=[NEW, OLD]):
        out = StringIO()
        call_command("rotate_encryption_key", "--check", stdout=out)

    assert "1 secret(s) decrypt with the configured keys" in out.getvalue()
    assert stored_tokens() == before
