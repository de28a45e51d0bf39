"""`POST /api/v1/feedback` (scope `feedback`) and `GET /api/v1/feedback/satisfaction`
(scope `usage:read`): end users' ratings of answers, and the share that is positive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import END_USER_MAX_LENGTH
from routing.api import caller, iso
from routing.quality.feedback import (
    GROUPINGS,
    give_feedback,
    key_lineage,
    normalise,
    satisfaction,
    target,
)
from routing.quality.feedback import window as feedback_window
from routing.quality.models import Feedback

COMMENT_MAX_CHARS = 4000
DEFAULT_DAYS = 30


class RatingField(serializers.Field):
    """ "up", "down", or a whole number of stars from 1 to 5."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            normalise(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return data.lower() if isinstance(data, str) else data

    def to_representation(self, value: Any) -> Any:
        return value


class FeedbackSerializer(serializers.Serializer):
    request_id = serializers.CharField(max_length=64)
    rating = RatingField()
    user = serializers.CharField(
        max_length=END_USER_MAX_LENGTH, required=False, default="", allow_blank=True
    )
    comment = serializers.CharField(
        max_length=COMMENT_MAX_CHARS, required=False, default="", allow_blank=True
    )


def shown(feedback: Feedback) -> dict[str, Any]:
    rating: Any = feedback.rating
    if feedback.kind == Feedback.Kind.THUMBS:
        rating = "up" if feedback.rating else "down"
    return {
        "object": "feedback",
        "request_id": feedback.request_id,
        "user": feedback.user,
        "rating": rating,
        "positive": feedback.positive,
        "comment": feedback.comment,
        "route": feedback.route,
        "provider": feedback.provider,
        "model": feedback.model,
        "created": iso(feedback.created),
        "updated": iso(feedback.updated),
    }


class FeedbackCreate(APIView):
    """Rate one of the key's answers: 201 the first time a user rates it, 200 on a change."""

    required_scope = "feedback"

    def post(self, request: Request) -> Response:
        body = FeedbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        feedback, created = give_feedback(
            caller(request), data["request_id"], data["rating"], data["user"], data["comment"]
        )
        return Response(
            shown(feedback), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class SatisfactionQuery(serializers.Serializer):
    by = serializers.ChoiceField(choices=list(GROUPINGS), default="model")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class SatisfactionReport(APIView):
    """The key's ratings by model, route, provider or arm: counts, positive share, target.

    The ratings its own requests received: those of the keys it was rotated from or into too.
    """

    required_scope = "usage:read"

    def get(self, request: Request) -> Response:
        query = SatisfactionQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        since = data.get("since") or timezone.now() - timedelta(days=DEFAULT_DAYS)
        keys = key_lineage(caller(request))  # a rotated key keeps its predecessors' ratings
        rows = feedback_window(since, data.get("until"), client_key_id__in=keys)
        groups, overall = satisfaction(rows, data["by"])
        goal = target()
        return Response(
            {
                "object": "list",
                "by": data["by"],
                "since": iso(since),
                "until": iso(data.get("until")),
                "target": f"{goal:f}",
                "total": overall.as_dict(goal),
                "data": [group.as_dict(goal) for group in groups],
            }
        )
