"""The DRF API of the gateway (`/api/v1/...`), authenticated by client key.

Each view names the scope it needs in `required_scope`; the project's DRF
defaults (routing/auth.py) authenticate the key and check it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from django.conf import settings
from django.db import IntegrityError
from django.db.models import Q
from django.http import HttpResponse
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import reports
from billing.budgets import current_spend
from billing.models import Budget, UsageRecord
from project.errors import ApiError
from project.redis import sync_client
from routing.actions import create_client_key, revoke_client_key, rotate_client_key
from routing.batches import MAX_ITEMS
from routing.batches.actions import cancel_batch, submit_batch
from routing.batches.checks import ERRORS_SHOWN, InvalidBatch, check_requests, numbered, parse_jsonl
from routing.models import Batch, BatchItem, ClientKey, Environment, Scope
from routing.preview import preview_sync
from routing.schema import add_context_headers, validate_chat_body


def caller(request: Request) -> ClientKey:
    """The client key the request was authenticated with (every view here requires one)."""
    key = request.auth
    assert isinstance(key, ClientKey)
    return key


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
        key = caller(self.request)  # type: ignore[attr-defined]
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
        key = caller(request)
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
        key = caller(request)
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
    return caller(request).environment


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


# -- batch jobs (scope `batches`) ---------------------------------------------------------


@dataclass(frozen=True)
class JSONLines:
    """A JSONL body, parsed line by line so that errors can name their lines."""

    lines: list[tuple[int, Any]]


def read_limited(stream: Any) -> bytes:
    limit = settings.SWITCHBOARD_BATCH_MAX_BYTES
    raw = bytes(stream.read(limit + 1)) if stream is not None else b""
    if len(raw) > limit:
        raise ApiError(413, f"A batch body may be at most {limit:,} bytes.", "batch_too_large")
    return raw


class BatchJSONParser(BaseParser):
    """A JSON body: a list of requests, or {"requests": [...], "route": ...}."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return orjson.loads(read_limited(stream) or b"null")
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"The body is not valid JSON: {exc}", "invalid_json") from None


class JSONLinesParser(BaseParser):
    """One request a line (application/jsonl); `route` comes as a query parameter."""

    media_type = "application/jsonl"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        return JSONLines(parse_jsonl(read_limited(stream)))


class NDJSONParser(JSONLinesParser):
    media_type = "application/x-ndjson"


def batch_progress(batch: Batch, counts: dict[str, int]) -> dict[str, Any]:
    done = sum(counts[s] for s in BatchItem.SETTLED)
    return {
        "object": "batch",
        "code": str(batch.code),
        "status": batch.status,
        "route": batch.route or None,
        "total": batch.total,
        "counts": counts,
        "done": done,
        "percent": round(100 * done / batch.total, 1) if batch.total else 100.0,
        "error": batch.error or None,
        "created": iso(batch.created),
        "started_at": iso(batch.started_at),
        "finished_at": iso(batch.finished_at),
    }


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def result_lines(items: Iterable[BatchItem]) -> Iterator[bytes]:
    """Each item as one JSON line: what it asked is the caller's; what it got, here."""
    for item in items:
        yield (
            orjson.dumps(
                {
                    "index": item.index,
                    "custom_id": item.custom_id or None,
                    "status": item.status,
                    "request_id": item.request_id or None,
                    "attempts": item.attempts,
                    "response": item.response,
                    "error": item.error,
                }
            )
            + b"\n"
        )


def batch_of(key: ClientKey, code: UUID) -> Batch:
    """The key's own batch; another key's is as absent as one that never existed."""
    batch = Batch.objects.of_key(key).filter(code=code).first()
    if batch is None:
        raise ApiError(404, f"No batch of this key has the code {code}.", "batch_not_found")
    return batch


def shown(batch: Batch) -> dict[str, Any]:
    counts = Batch.objects.filter(pk=batch.pk).item_counts()[batch.pk]
    return batch_progress(batch, counts)


class BatchList(APIView):
    """The key's batches, newest first (GET); a new batch of up to 10,000 requests (POST)."""

    required_scope = "batches"
    parser_classes = [BatchJSONParser, JSONLinesParser, NDJSONParser]

    def get(self, request: Request) -> Response:
        key = caller(request)
        recent = Batch.objects.of_key(key)[:100]
        counts = Batch.objects.filter(pk__in=[b.pk for b in recent]).item_counts()
        return Response(
            {"object": "list", "data": [batch_progress(b, counts[b.pk]) for b in recent]}
        )

    def post(self, request: Request) -> Response:
        key = caller(request)
        data = request.data
        route = request.query_params.get("route", "")
        if isinstance(data, JSONLines):
            lines = data.lines
        elif isinstance(data, list) or data == {}:  # {}: DRF's stand-in for an empty body
            lines = numbered(list(data))
        elif isinstance(data, dict) and isinstance(data.get("requests"), list):
            lines = numbered(data["requests"])
            route = data.get("route") or route
        else:
            raise ApiError(
                400,
                'Send the requests as a JSON list, as {"requests": [...]}, or one a line '
                "(content-type application/jsonl).",
                "invalid_request",
                param="requests",
            )
        if not isinstance(route, str):
            raise ApiError(
                400, "'route' must be a route or model name.", "invalid_request", "route"
            )
        try:
            entries = check_requests(lines, key, route)
        except InvalidBatch as invalid:
            error = ApiError(400, str(invalid), "invalid_batch")
            body = error.body()
            body["error"]["lines"] = [e.as_dict() for e in invalid.errors[:ERRORS_SHOWN]]
            return Response(body, status=400)
        batch = submit_batch(key, entries, route)
        return Response(shown(batch), status=status.HTTP_201_CREATED)


class BatchDetail(APIView):
    """A batch's progress: items by status, the share settled, when it started and finished."""

    required_scope = "batches"

    def get(self, request: Request, code: UUID) -> Response:
        key = caller(request)
        return Response(shown(batch_of(key, code)))


class BatchResults(APIView):
    """Its items as JSON lines, in order (`status`, `offset` and `limit` narrow them)."""

    required_scope = "batches"

    def get(self, request: Request, code: UUID) -> HttpResponse:
        key = caller(request)
        batch = batch_of(key, code)
        query = ResultsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        items = batch.items.order_by("index")
        if query.validated_data.get("status"):
            items = items.filter(status=query.validated_data["status"])
        offset = query.validated_data["offset"]
        items = items[offset : offset + query.validated_data["limit"]]
        return HttpResponse(
            b"".join(result_lines(items.iterator(chunk_size=500))),
            content_type="application/jsonl",
        )


class ResultsQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=BatchItem.Status.choices, required=False)
    offset = serializers.IntegerField(min_value=0, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=MAX_ITEMS, default=MAX_ITEMS)


class BatchCancel(APIView):
    """Cancel: what has not started never will; requests in flight finish (and are billed)."""

    required_scope = "batches"

    def post(self, request: Request, code: UUID) -> Response:
        key = caller(request)
        batch = batch_of(key, code)
        if not cancel_batch(batch):
            raise ApiError(409, f"This batch has already {batch.status}.", "batch_finished")
        batch.refresh_from_db()
        return Response(shown(batch))


class RoutePreview(APIView):
    """A chat completion's body in; its context, rule and ranked candidates out (routing.preview).

    Scope ``chat``: a key that may send the request may see where it would go.
    """

    required_scope = "chat"

    def post(self, request: Request) -> Response:
        body = request.data if isinstance(request.data, dict) else {}
        chat = validate_chat_body({**body, "stream": False})
        add_context_headers(chat, request.headers.items())  # as the gateway does
        return Response(preview_sync(chat, caller(request).key_hash))
