"""Secrets at rest: encrypted with MultiFernet under keys from the environment.

``SWITCHBOARD_ENCRYPTION_KEYS`` is a comma-separated list of Fernet keys, the
first used to encrypt and all to decrypt, so a key can be rotated by putting a
new one first. Production refuses to start without it; a development machine
derives one from SECRET_KEY so that `make run` needs no set-up.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


class SecretUnreadable(Exception):
    """A stored secret that no configured key decrypts (the key was removed)."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _keys() -> tuple[str, ...]:
    keys = tuple(settings.SWITCHBOARD_ENCRYPTION_KEYS)
    if keys:
        return keys
    derived = hashlib.sha256(f"switchboard-dev:{settings.SECRET_KEY}".encode()).digest()
    return (base64.urlsafe_b64encode(derived).decode(),)


def encrypt(value: str) -> str:
    return _fernet(_keys()).encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(_keys()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no configured encryption key decrypts this secret") from None


def reencrypt(token: str) -> str:
    """The same secret under the first (newest) key; raises SecretUnreadable like decrypt."""
    try:
        return _fernet(_keys()).rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no configured encryption key decrypts this secret") from None


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A column that holds a token from ``encrypt``; never the secret itself.

    The model sets and reads it through ``encrypt``/``decrypt``; the type marks
    the column for `manage.py rotate_encryption_key` and the plaintext audit.
    """


def encrypted_columns() -> list[tuple[type[models.Model], str]]:
    """Every (model, field name) that holds encrypted secrets, across the installed apps."""
    from django.apps import apps

    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, EncryptedTextField)
    ]


def reencrypt_all(
    dry_run: bool = False, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Re-encrypt every stored secret under the newest key, in one transaction.

    Returns how many secrets each column holds. A secret no configured key
    decrypts raises SecretUnreadable and nothing is changed.
    """
    from django.db import transaction

    columns = encrypted_columns()
    rows = [
        (model, name, pk, token)
        for model, name in columns
        for pk, token in model._default_manager.exclude(**{name: ""}).values_list("pk", name)
    ]
    counts = {f"{model._meta.label}.{name}": 0 for model, name in columns}
    with transaction.atomic():
        for done, (model, name, pk, token) in enumerate(rows, start=1):
            fresh = reencrypt(token)
            if not dry_run:
                # update(): a new ciphertext of the same secret is not a config change.
                model._default_manager.filter(pk=pk).update(**{name: fresh})
            counts[f"{model._meta.label}.{name}"] += 1
            if progress is not None:
                progress(done, len(rows))
    return counts


def last4(value: str) -> str:
    return value[-4:] if len(value) >= 8 else ""
