"""Secrets at rest: encrypted with MultiFernet under keys from the environment.

``SWITCHBOARD_ENCRYPTION_KEYS`` is a comma-separated list of Fernet keys, the
first used to encrypt and all to decrypt, so a key can be rotated by putting a
new one first. Production refuses to start without it; a development machine
derives one from SECRET_KEY so that `make run` needs no set-up.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


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


def last4(value: str) -> str:
    return value[-4:] if len(value) >= 8 else ""
