"""DRF authentication and permission by client key, for the /api/v1 endpoints."""

from __future__ import annotations

import time
from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from project.redis import sync_client
from routing.engine import KEY_SCOPES_USED
from routing.models import ClientKey, hash_key


class ClientKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ClientKey] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        key = ClientKey.objects.active().filter(key_hash=hash_key(token.strip())).first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key, or the key was revoked.")
        return (None, key)

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class HasScope(permissions.BasePermission):
    """Grants access when the client key carries the view's ``required_scope``."""

    message = "This key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ClientKey):
            return False
        scope = getattr(view, "required_scope", None)
        self.message = f"This key lacks the '{scope}' scope."
        allowed = scope is not None and key.has_scope(scope)
        if allowed:
            # For the key audit: which of its scopes a key really uses.
            sync_client().hset(KEY_SCOPES_USED, f"{key.pk}:{scope}", int(time.time()))
        return allowed
