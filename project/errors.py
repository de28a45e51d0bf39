"""OpenAI's error body, for every API error Switchboard returns.

``{"error": {"message", "type", "code"}}`` with the matching status, and
``Retry-After`` on 429 and 503, so that OpenAI SDKs raise the right exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


@dataclass(frozen=True)
class ApiError(Exception):
    status: int
    message: str
    code: str
    param: str | None = None
    retry_after: float | None = None
    request_id: str | None = None  # set once a request has one, to find its ledger row

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": TYPE_BY_STATUS.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        if self.request_id is not None:
            headers["x-switchboard-request-id"] = self.request_id
        return headers


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(exc.body(), status=exc.status, headers=exc.headers())
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    message = _flatten(exc.detail)
    error = ApiError(status=exc.status_code, message=message, code=_code(exc))
    headers = {}
    auth_header = getattr(exc, "auth_header", None)  # DRF sets it on a 401: the scheme it wants
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, round(exc.wait)))
    return Response(error.body(), status=exc.status_code, headers=headers)


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return str(exc.default_code)


def _flatten(detail: Any, prefix: str = "") -> str:
    """Turn DRF's nested error detail into one sentence naming each field."""
    if isinstance(detail, dict):
        parts = [
            _flatten(value, f"{prefix}{key}: " if key != "non_field_errors" else prefix)
            for key, value in detail.items()
        ]
        return "; ".join(parts)
    if isinstance(detail, list):
        return "; ".join(_flatten(item, prefix) for item in detail)
    return f"{prefix}{detail}"
