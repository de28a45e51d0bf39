"""DRF authentication and permission by client key, for the /api/v1 endpoints.

They are the project's DRF defaults (settings.REST_FRAMEWORK), so a view is
guarded unless it says otherwise, and a view that names no ``required_scope``
is closed to every key. tests/routing/test_scopes.py walks the URLs to hold
every /api/ view to that.
"""

from __future__ import annotations

import time
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from project.redis import sync_client
from routing.engine import KEY_SCOPES_USED
from routing.models import ClientKey, hash_key


class ClientKeyAuthentication(authentication.BaseAuthentication):
    """The gateway's rules (routing.client.authenticate), read from the database."""

    def authenticate(self, request: Request) -> tuple[Any, ClientKey] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        key = ClientKey.objects.active().filter(key_hash=hash_key(token.strip())).first()
        if key is None:
            raise exceptions.AuthenticationFailed(
                "Invalid API key, or the key was revoked.", code="invalid_api_key"
            )
        if key.expires_at is not None and key.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed(
                "This API key has expired; use its successor.", code="expired_api_key"
            )
        return (None, key)

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class HasScope(permissions.BasePermission):
    """Grants access when the client key carries the view's ``required_scope``."""

    message = "This key lacks the scope this endpoint needs."
    code = "insufficient_scope"

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ClientKey):
            raise exceptions.NotAuthenticated(
                "Missing API key: send 'Authorization: Bearer <client key>'.",
                code="missing_api_key",
            )
        scope = getattr(view, "required_scope", None)
        if scope is None:
            self.message = "This endpoint names no scope, so no key may call it."
            return False
        self.message = f"This key lacks the '{scope}' scope."
        allowed = key.has_scope(scope)
        if allowed:
            # For the key audit: which of its scopes a key really uses.
            sync_client().hset(KEY_SCOPES_USED, f"{key.pk}:{scope}", int(time.time()))
        return allowed
