"""The DRF API of the gateway (`/api/v1/...`), authenticated by client key."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from billing.models import UsageRecord
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
