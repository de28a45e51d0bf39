"""End users rate answers through POST /api/v1/feedback; satisfaction is read per group."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from billing.models import UsageRecord
from routing.models import ClientKey, Feedback, hash_key
from tests.factories import make_client_key
from tests.servers import SimulatorHandle

MESSAGES: Any = [{"role": "user", "content": "Summarise: we agreed to ship on Friday."}]


@pytest.fixture
def notes_key(demo: SimulatorHandle) -> str:
    """A service's key: it sends requests and passes its users' ratings on."""
    return make_client_key(name="notes", scopes=["chat", "feedback", "usage:read"])


def answered(gateway: str, key: str, **extra: Any) -> str:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="summary", messages=MESSAGES, **extra
        )
    return raw.headers["x-switchboard-request-id"]


def rate(gateway: str, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway}/api/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}
    )


def test_a_user_rates_an_answer_before_its_usage_record_is_drained(
    gateway: str, notes_key: str
) -> None:
    request_id = answered(gateway, notes_key)
    assert not UsageRecord.objects.filter(request_id=request_id).exists()  # still in the ledger

    response = rate(
        gateway, notes_key, request_id=request_id, rating="up", user="ana", comment="Spot on."
    )

    assert response.status_code == 201, response.text
    assert response.json() | {"created": None, "updated": None} == {
        "object": "feedback",
        "request_id": request_id,
        "user": "ana",
        "rating": "up",
        "positive": True,
        "comment": "Spot on.",
        "route": "summary",
        "provider": "aimlapi",
        "model": "gpt-4o-mini",
        "created": None,
        "updated": None,
    }
    feedback = Feedback.objects.get()
    record = UsageRecord.objects.get(request_id=request_id)
    assert (feedback.kind, feedback.rating, feedback.positive) == ("thumbs", 1, True)
    assert feedback.deployment_id == record.deployment_id
    assert feedback.client_key_id == record.client_key_id


def test_a_user_changes_their_rating_and_keeps_one(gateway: str, notes_key: str) -> None:
    request_id = answered(gateway, notes_key)
    first = rate(gateway, notes_key, request_id=request_id, rating=5, user="ana")

    changed = rate(gateway, notes_key, request_id=request_id, rating=2, user="ana", comment="Wrong")
    someone_else = rate(gateway, notes_key, request_id=request_id, rating="down", user="bo")

    assert (first.status_code, changed.status_code, someone_else.status_code) == (201, 200, 201)
    assert changed.json()["rating"] == 2 and changed.json()["positive"] is False
    rows = {f.user: (f.kind, f.rating, f.positive, f.comment) for f in Feedback.objects.all()}
    assert rows == {"ana": ("stars", 2, False, "Wrong"), "bo": ("thumbs", 0, False, "")}
    ana = Feedback.objects.get(user="ana")
    assert ana.updated > ana.created


def test_an_unknown_request_id_is_404(gateway: str, notes_key: str) -> None:
    response = rate(gateway, notes_key, request_id="never-sent", rating="up")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"
    assert response.json()["error"]["param"] == "request_id"
    assert not Feedback.objects.exists()


def test_a_key_may_not_rate_another_keys_request(gateway: str, notes_key: str) -> None:
    theirs = answered(gateway, make_client_key(name="other", scopes=["chat", "feedback"]))

    response = rate(gateway, notes_key, request_id=theirs, rating="down")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"
    assert not Feedback.objects.exists()


def test_a_rotated_key_may_rate_its_predecessors_requests(gateway: str, notes_key: str) -> None:
    from routing.actions import rotate_client_key

    request_id = answered(gateway, notes_key)
    old = ClientKey.objects.get(key_hash=hash_key(notes_key))
    _, successor = rotate_client_key(old, timedelta(hours=1))

    assert rate(gateway, successor, request_id=request_id, rating="up").status_code == 201


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"rating": "up"}, "request_id"),
        ({"request_id": "x", "rating": "meh"}, "rating"),
        ({"request_id": "x", "rating": 6}, "rating"),
        ({"request_id": "x", "rating": 0}, "rating"),
        ({"request_id": "x", "rating": True}, "rating"),
        ({"request_id": "x", "rating": 4.5}, "rating"),
        ({"request_id": "x", "rating": "up", "comment": "x" * 4001}, "comment"),
    ],
)
def test_a_bad_body_is_400_in_openais_error_shape(
    gateway: str, notes_key: str, body: dict[str, Any], named: str
) -> None:
    response = rate(gateway, notes_key, **body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{named}: ")


def test_a_key_without_the_feedback_scope_is_refused(gateway: str, demo: SimulatorHandle) -> None:
    key = make_client_key(name="chat-only", scopes=["chat"])
    request_id = answered(gateway, key)

    response = rate(gateway, key, request_id=request_id, rating="up")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


# -- satisfaction --------------------------------------------------------------------------


def rated(key: ClientKey, n: int, positive: int, **fields: Any) -> None:
    """n answers of the key with these fields; `positive` of them rated up, the rest down."""
    start = UsageRecord.objects.count()
    for i in range(n):
        record = UsageRecord.objects.create(
            request_id=f"req-{start + i}", client_key_id=key.pk, status="ok", **fields
        )
        from routing.quality.feedback import give_feedback

        give_feedback(key, record.request_id, "up" if i < positive else "down", user="u")


def satisfaction(gateway: str, key: str, **params: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway}/api/v1/feedback/satisfaction",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_satisfaction_per_model_against_the_90_percent_target(gateway: str, notes_key: str) -> None:
    key = ClientKey.objects.get(key_hash=hash_key(notes_key))
    rated(key, 20, 19, provider="aimlapi", model="gpt-4o-mini", route="summary")
    rated(key, 10, 8, provider="openai", model="gpt-4o-mini", route="summary")
    other = ClientKey.objects.get(key_hash=hash_key(make_client_key(name="x", scopes=["chat"])))
    rated(other, 5, 0, provider="aimlapi", model="gpt-4o-mini")  # not this key's

    report = satisfaction(gateway, notes_key, by="model")

    assert report["target"] == "0.9"
    assert report["data"] == [
        {
            "group": "aimlapi/gpt-4o-mini",
            "ratings": 20,
            "positive": 19,
            "satisfaction": "0.9500",
            "meets_target": True,
        },
        {
            "group": "openai/gpt-4o-mini",
            "ratings": 10,
            "positive": 8,
            "satisfaction": "0.8000",
            "meets_target": False,
        },
    ]
    assert report["total"] == {
        "group": "all",
        "ratings": 30,
        "positive": 27,
        "satisfaction": "0.9000",
        "meets_target": True,
    }


def test_satisfaction_per_experiment_arm_and_rollout_arm(gateway: str, notes_key: str) -> None:
    key = ClientKey.objects.get(key_hash=hash_key(notes_key))
    rated(key, 4, 4, experiment="prompt-v2", arm="control", rollout_arm="legacy")
    rated(key, 4, 1, experiment="prompt-v2", arm="treatment", rollout_arm="new")

    by_arm = satisfaction(gateway, notes_key, by="experiment_arm")["data"]
    by_rollout = satisfaction(gateway, notes_key, by="rollout_arm")["data"]

    assert [(r["group"], r["satisfaction"]) for r in by_arm] == [
        ("prompt-v2/control", "1.0000"),
        ("prompt-v2/treatment", "0.2500"),
    ]
    assert [(r["group"], r["meets_target"]) for r in by_rollout] == [
        ("legacy", True),
        ("new", False),
    ]


def test_satisfaction_counts_the_window_asked_for(gateway: str, notes_key: str) -> None:
    key = ClientKey.objects.get(key_hash=hash_key(notes_key))
    rated(key, 3, 3, route="summary")
    Feedback.objects.update(updated=timezone.now() - timedelta(days=40))
    rated(key, 2, 0, route="summary")

    recent = satisfaction(gateway, notes_key, by="route")  # 30 days by default
    since = (timezone.now() - timedelta(days=60)).isoformat()
    longer = satisfaction(gateway, notes_key, by="route", since=since)

    assert recent["total"]["ratings"] == 2 and recent["total"]["satisfaction"] == "0.0000"
    assert longer["total"]["ratings"] == 5 and longer["total"]["satisfaction"] == "0.6000"


def test_an_unknown_grouping_is_400(gateway: str, notes_key: str) -> None:
    response = httpx.get(
        f"{gateway}/api/v1/feedback/satisfaction?by=colour",
        headers={"Authorization": f"Bearer {notes_key}"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("by: ")


def test_forgetting_an_end_user_keeps_their_ratings_under_a_pseudonym_without_comments(
    gateway: str, notes_key: str
) -> None:
    from billing.actions import forget_user

    request_id = answered(gateway, notes_key, user="ana@example.com")
    rate(gateway, notes_key, request_id=request_id, rating=5, user="ana@example.com",
         comment="Call me on +1 555 0100")  # fmt: skip
    rate(gateway, notes_key, request_id=request_id, rating="up", user="bo")

    result = forget_user("ana@example.com")

    forgotten = Feedback.objects.get(rating=5)
    assert (forgotten.user, forgotten.comment) == (result.pseudonym, "")
    assert Feedback.objects.get(user="bo").kind == "thumbs"
