"""The DRF API of the gateway (`/api/v1/...`), authenticated by client key.

Each view names the scope it needs in `required_scope`; the project's DRF
defaults (routing/auth.py) authenticate the key and check it.
"""

from __future__ import annotations

import math
from datetime import timedelta
from uuid import UUID

from django.db import IntegrityError
from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import reports
from billing.budgets import current_spend
from billing.models import Budget, UsageRecord
from project.errors import ApiError
from project.redis import sync_client
from routing.actions import create_client_key, revoke_client_key, rotate_client_key
from routing.models import ClientKey, Environment, Scope


class UsageRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = UsageRecord
        fields = [
            "request_id",
            "created",
            "route",
            "provider",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "cost_usd",
            "latency_ms",
            "status",
            "http_status",
            "error_code",
            "streamed",
            "usage_estimated",
            "attempts",
        ]


class KeyUsageMixin:
    required_scope = "usage:read"
    serializer_class = UsageRecordSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        key = self.request.auth  # type: ignore[attr-defined]
        assert isinstance(key, ClientKey)
        return UsageRecord.objects.filter(client_key_id=key.id)


class UsageList(KeyUsageMixin, ListAPIView):
    """The calling key's latest usage records (newest first, 100 at most)."""

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return super().get_queryset()[:100]


class UsageDetail(KeyUsageMixin, RetrieveAPIView):
    """One usage record by the request id of `x-switchboard-request-id`."""

    lookup_field = "request_id"


class BudgetList(APIView):
    """The budgets that apply to the calling key, with their live spend this period."""

    required_scope = "usage:read"

    def get(self, request: Request) -> Response:
        key = request.auth
        assert isinstance(key, ClientKey)
        now = timezone.now()
        budgets = Budget.objects.exclude(Q(scope="key") & ~Q(scope_ref=key.name))
        rows = []
        for budget in budgets:
            info = budget.info()
            spent, reserved = current_spend(sync_client(), info, now)
            rows.append(
                {
                    "budget": info.label,
                    "amount_usd": f"{budget.amount_usd.normalize():f}",
                    "hard": budget.hard,
                    "period": info.period_key(now),
                    "spent_usd": f"{spent:f}",
                    "in_flight_usd": f"{reserved:f}",
                    "remaining_usd": f"{budget.amount_usd - spent - reserved:f}",
                    "resets_at": info.period_end(now).isoformat(),
                    "alert_at": budget.alert_at,
                }
            )
        return Response({"object": "list", "data": rows})


class SavingsQuery(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=list(reports.GROUPINGS), default="day")
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)


class Savings(APIView):
    """The calling key's savings against direct providers, against the 70% target."""

    required_scope = "usage:read"

    def get(self, request: Request) -> Response:
        key = request.auth
        assert isinstance(key, ClientKey)
        query = SavingsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows, total = reports.savings(
            query.validated_data["group_by"],
            query.validated_data.get("start"),
            query.validated_data.get("end"),
            client_key_id=key.id,
        )
        return Response(
            {
                "target_saving_pct": f"{reports.TARGET_SAVING_PCT}",
                "total": total.as_dict(),
                "data": [row.as_dict() for row in rows],
            }
        )


# -- client keys (scope `admin`) -----------------------------------------------

MAX_GRACE_HOURS = 30 * 24
ALREADY_ROTATED = "This key already has a successor; rotate the successor instead."


class ClientKeySerializer(serializers.ModelSerializer):
    """A key as the admin API shows it: never its hash, and its raw value only once."""

    rotated_from = serializers.SlugRelatedField(slug_field="code", read_only=True)
    successor = serializers.SerializerMethodField()

    class Meta:
        model = ClientKey
        fields = [
            "code",
            "name",
            "prefix",
            "environment",
            "scopes",
            "allowed_models",
            "created",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "rotated_from",
            "successor",
        ]

    def get_successor(self, key: ClientKey) -> str | None:
        successor = getattr(key, "successor", None)  # the reverse one-to-one raises when unset
        return str(successor.code) if successor is not None else None


class NewKeySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.MultipleChoiceField(choices=Scope.choices, allow_empty=False)
    environment = serializers.ChoiceField(choices=Environment.choices, required=False)


class RotateSerializer(serializers.Serializer):
    grace_hours = serializers.FloatField(min_value=0, max_value=MAX_GRACE_HOURS)

    def validate_grace_hours(self, value: float) -> float:
        if math.isnan(value):  # "nan" passes both bounds
            raise serializers.ValidationError("A valid number is required.")
        return value


def shown_once(key: ClientKey, raw: str) -> dict[str, object]:
    return {**ClientKeySerializer(key).data, "key": raw}


def caller_environment(request: Request) -> str:
    """An admin key manages the keys of its own environment only: a dev key mints no prod key."""
    key = request.auth
    assert isinstance(key, ClientKey)
    return key.environment


def key_by_code(request: Request, code: UUID) -> ClientKey:
    key = (
        ClientKey.objects.select_related("rotated_from", "successor")
        .filter(code=code, environment=caller_environment(request))
        .first()
    )
    if key is None:
        raise ApiError(
            404,
            f"No {caller_environment(request)} client key has the code {code}.",
            "key_not_found",
        )
    return key


class KeyList(APIView):
    """Every client key, without secrets (GET); a new key, its raw value shown once (POST)."""

    required_scope = "admin"

    def get(self, request: Request) -> Response:
        keys = ClientKey.objects.select_related("rotated_from", "successor").filter(
            environment=caller_environment(request)
        )
        return Response({"object": "list", "data": ClientKeySerializer(keys, many=True).data})

    def post(self, request: Request) -> Response:
        new = NewKeySerializer(data=request.data)
        new.is_valid(raise_exception=True)
        wanted = new.validated_data["scopes"]
        environment = caller_environment(request)
        if new.validated_data.get("environment", environment) != environment:
            raise ApiError(
                403,
                f"A {environment} admin key creates {environment} keys only; use an admin key "
                f"of {new.validated_data['environment']}, or the admin site.",
                "environment_not_allowed",
                param="environment",
            )
        key, raw = create_client_key(
            new.validated_data["name"],
            [scope for scope in Scope.values if scope in wanted],  # a stable order
            environment,
        )
        return Response(shown_once(key, raw), status=status.HTTP_201_CREATED)


class KeyRotate(APIView):
    """Issue the key's successor, raw value shown once; the old key works `grace_hours` more."""

    required_scope = "admin"

    def post(self, request: Request, code: UUID) -> Response:
        key = key_by_code(request, code)
        query = RotateSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        if key.revoked_at is not None:
            raise ApiError(409, "This key was revoked; create a new one instead.", "key_revoked")
        if getattr(key, "successor", None) is not None:
            raise ApiError(409, ALREADY_ROTATED, "already_rotated")
        try:
            successor, raw = rotate_client_key(
                key, timedelta(hours=query.validated_data["grace_hours"])
            )
        except IntegrityError:  # a concurrent rotation of the same key won
            raise ApiError(409, ALREADY_ROTATED, "already_rotated") from None
        return Response(shown_once(successor, raw), status=status.HTTP_201_CREATED)


class KeyRevoke(APIView):
    """Revoke the key: every gateway process refuses it at its next table check."""

    required_scope = "admin"

    def post(self, request: Request, code: UUID) -> Response:
        key = key_by_code(request, code)
        if not revoke_client_key(key):
            raise ApiError(409, "This key was already revoked.", "already_revoked")
        key.refresh_from_db()
        return Response(ClientKeySerializer(key).data)
