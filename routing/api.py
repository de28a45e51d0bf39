"""The DRF API of the gateway (`/api/v1/...`), authenticated by client key."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import reports
from billing.budgets import current_spend
from billing.models import Budget, UsageRecord
from project.redis import sync_client
from routing.auth import ClientKeyAuthentication, HasScope
from routing.models import ClientKey


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
    authentication_classes = [ClientKeyAuthentication]
    permission_classes = [HasScope]
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

    authentication_classes = [ClientKeyAuthentication]
    permission_classes = [HasScope]
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

    authentication_classes = [ClientKeyAuthentication]
    permission_classes = [HasScope]
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
