"""Every endpoint needs one scope: anonymous callers get 401, a key with every
scope but that one 403 naming it, a key with only that one its answer.

The tables below are checked against the URL resolver and the gateway's
ENDPOINTS, so an endpoint added without a row here fails this file, and so does
a scope no endpoint tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from billing.models import UsageRecord
from routing.auth import ClientKeyAuthentication, HasScope
from routing.gateway import ENDPOINTS
from routing.models import Batch, BatchItem, ClientKey, Route, Scope, hash_key
from tests.factories import load_demo_config, make_client_key
from tests.servers import SimulatorHandle

# Scopes that no endpoint needs yet. Adding their endpoints means adding their
# rows below and removing them here; test_every_scope_is_tested_allowed_and_refused
# insists on both.
NO_ENDPOINT_YET: dict[str, str] = {}


BATCH_REQUEST = {"model": "summary", "messages": [{"role": "user", "content": "Summarise."}]}


def no_params(caller: ClientKey) -> dict[str, str]:
    return {}


def a_usage_record_of(caller: ClientKey) -> dict[str, str]:
    record = UsageRecord.objects.create(
        request_id=f"req-{caller.pk}",
        client_key_id=caller.pk,
        client_key_name=caller.name,
        status=UsageRecord.Status.OK,
    )
    return {"request_id": record.request_id}


def an_answer_of(caller: ClientKey) -> dict[str, str]:
    """A request of the calling key that its end user can rate."""
    UsageRecord.objects.create(
        request_id="req-rated", client_key_id=caller.pk, status=UsageRecord.Status.OK
    )
    return {}


def a_route(caller: ClientKey) -> dict[str, str]:
    """A route the new batch's requests can name (a batch checks its models first)."""
    Route.objects.get_or_create(name="summary")
    return {}


def the_demo_routes(caller: ClientKey) -> dict[str, str]:
    """The demo's routes, for a preview (which calls no provider, so no simulator runs)."""
    load_demo_config("http://127.0.0.1:9")
    return {}


def a_batch_of(caller: ClientKey) -> dict[str, str]:
    batch = Batch.objects.create(client_key=caller, total=1)
    BatchItem.objects.create(batch=batch, index=0, request=BATCH_REQUEST)
    return {"code": str(batch.code)}


def another_key(caller: ClientKey) -> dict[str, str]:
    raw = make_client_key(name="target", scopes=["chat"])
    return {"code": str(ClientKey.objects.get(key_hash=hash_key(raw)).code)}


@dataclass(frozen=True)
class ApiCall:
    method: str
    route: str  # as the URL resolver spells it
    scope: str
    ok: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    # The route's parameters, filled with objects the calling key may act on.
    params: Callable[[ClientKey], dict[str, str]] = no_params

    def __str__(self) -> str:
        return f"{self.method} {self.route}"

    def path(self, caller: ClientKey) -> str:
        values = self.params(caller)
        return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], self.route)

    def send(self, path: str, raw_key: str | None) -> Any:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"} if raw_key else {}
        client = Client()
        if self.method == "GET":
            return client.get(path, **headers)
        return client.generic(
            self.method, path, json.dumps(self.body), content_type="application/json", **headers
        )


API_CALLS = [
    ApiCall("GET", "/api/v1/usage", "usage:read"),
    ApiCall("GET", "/api/v1/usage/<str:request_id>", "usage:read", params=a_usage_record_of),
    ApiCall("GET", "/api/v1/budgets", "usage:read"),
    ApiCall("GET", "/api/v1/savings", "usage:read"),
    ApiCall("GET", "/api/v1/keys", "admin"),
    ApiCall("POST", "/api/v1/keys", "admin", 201, {"name": "new", "scopes": ["chat"]}),
    ApiCall(
        "POST",
        "/api/v1/keys/<uuid:code>/rotate",
        "admin",
        201,
        {"grace_hours": 1},
        params=another_key,
    ),
    ApiCall("POST", "/api/v1/keys/<uuid:code>/revoke", "admin", params=another_key),
    ApiCall("GET", "/api/v1/batches", "batches"),
    ApiCall("POST", "/api/v1/batches", "batches", 201, {"requests": [BATCH_REQUEST]}, a_route),
    ApiCall("GET", "/api/v1/batches/<uuid:code>", "batches", params=a_batch_of),
    ApiCall("GET", "/api/v1/batches/<uuid:code>/results", "batches", params=a_batch_of),
    ApiCall("POST", "/api/v1/batches/<uuid:code>/cancel", "batches", params=a_batch_of),
    ApiCall(
        "POST",
        "/api/v1/feedback",
        "feedback",
        201,
        {"request_id": "req-rated", "rating": "up"},
        params=an_answer_of,
    ),
    ApiCall("GET", "/api/v1/feedback/satisfaction", "usage:read"),
    ApiCall("POST", "/api/v1/route/preview", "chat", body=BATCH_REQUEST, params=the_demo_routes),
]

MESSAGES = [{"role": "user", "content": "Summarise the call."}]


def chat_answer(sdk: openai.OpenAI) -> object:
    answer = sdk.chat.completions.create(model="summary", messages=MESSAGES)  # type: ignore[arg-type]
    return answer.choices[0].message.content


def model_ids(sdk: openai.OpenAI) -> object:
    return [model.id for model in sdk.models.list()]


# The gateway's endpoints and their scopes, called the way a service calls them:
# through the openai SDK. Each call returns what it got, which is empty on failure.
GATEWAY_CALLS: dict[tuple[str, str], tuple[str, Callable[[openai.OpenAI], object]]] = {
    ("POST", "/v1/chat/completions"): ("chat", chat_answer),
    ("GET", "/v1/models"): ("chat", model_ids),
}


def api_routes() -> Iterator[tuple[str, Any]]:
    """Every URL pattern under /api/ and its view, from the URL resolver."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern), entry.callback

    for route, view in walk(get_resolver().url_patterns, "/"):
        if route.startswith("/api/"):
            yield route, view


def methods(view_class: type[APIView]) -> list[str]:
    return [
        name.upper()
        for name in view_class.http_method_names
        if name not in ("options", "head") and hasattr(view_class, name)
    ]


def everything_but(scope: str) -> list[str]:
    return [s for s in Scope.values if s != scope]


# -- the tables cover everything -------------------------------------------------------


def test_every_api_view_authenticates_a_client_key_and_names_its_scope() -> None:
    routes = list(api_routes())
    assert routes, "the walk found no /api/ URL at all"
    for route, view in routes:
        view_class = getattr(view, "view_class", None)
        assert view_class is not None and issubclass(view_class, APIView), (
            f"{route} is not a DRF view, so nothing checks its caller's key"
        )
        assert list(view_class.authentication_classes) == [ClientKeyAuthentication], route
        assert HasScope in view_class.permission_classes, route
        assert getattr(view_class, "required_scope", None) in Scope.values, (
            f"{route} names no scope (required_scope) out of {Scope.values}"
        )


def test_every_api_endpoint_has_a_row_in_the_table() -> None:
    walked = {
        (method, route): view.view_class.required_scope
        for route, view in api_routes()
        for method in methods(view.view_class)
    }
    assert walked == {(call.method, call.route): call.scope for call in API_CALLS}


def test_every_gateway_endpoint_has_a_row_in_the_table() -> None:
    declared = {(endpoint.method, path): endpoint.scope for path, endpoint in ENDPOINTS.items()}
    assert declared == {endpoint: scope for endpoint, (scope, _) in GATEWAY_CALLS.items()}


def test_every_scope_is_tested_allowed_and_refused() -> None:
    tested = {call.scope for call in API_CALLS} | {scope for scope, _ in GATEWAY_CALLS.values()}

    assert not tested & set(NO_ENDPOINT_YET), "an endpoint exists now: drop it from NO_ENDPOINT_YET"
    assert tested | set(NO_ENDPOINT_YET) == set(Scope.values)


# -- the API ---------------------------------------------------------------------------


def unchanged_keys() -> list[tuple[Any, ...]]:
    return list(ClientKey.objects.order_by("pk").values_list("pk", "revoked_at", "expires_at"))


@pytest.mark.django_db
@pytest.mark.parametrize("call", API_CALLS, ids=str)
def test_an_api_endpoint_refuses_an_anonymous_caller(call: ApiCall) -> None:
    path = call.path(ClientKey.objects.get(key_hash=hash_key(make_client_key())))
    before = unchanged_keys()

    response = call.send(path, None)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "missing_api_key"
    assert unchanged_keys() == before


@pytest.mark.django_db
@pytest.mark.parametrize("call", API_CALLS, ids=str)
def test_an_api_endpoint_refuses_a_key_with_every_scope_but_its_own(call: ApiCall) -> None:
    raw = make_client_key(name="wrong", scopes=everything_but(call.scope))
    path = call.path(ClientKey.objects.get(key_hash=hash_key(raw)))
    before = unchanged_keys()

    response = call.send(path, raw)

    assert response.status_code == 403
    assert response.json()["error"] == {
        "message": f"This key lacks the '{call.scope}' scope.",
        "type": "permission_error",
        "param": None,
        "code": "insufficient_scope",
    }
    assert unchanged_keys() == before


# Transactional: the route preview reads the routing table, which another thread builds.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("call", API_CALLS, ids=str)
def test_an_api_endpoint_answers_a_key_with_only_its_scope(call: ApiCall) -> None:
    raw = make_client_key(name="right", scopes=[call.scope])

    response = call.send(call.path(ClientKey.objects.get(key_hash=hash_key(raw))), raw)

    assert response.status_code == call.ok, response.content


# -- the gateway, through the openai SDK -------------------------------------------------


@pytest.mark.parametrize("endpoint", list(GATEWAY_CALLS), ids=" ".join)
def test_a_gateway_endpoint_refuses_an_anonymous_caller(
    endpoint: tuple[str, str], gateway: str, demo: SimulatorHandle
) -> None:
    _, call = GATEWAY_CALLS[endpoint]
    # The SDK insists on a key, so the key comes off on the way out.
    anonymous = httpx.Client(event_hooks={"request": [lambda r: r.headers.pop("Authorization")]})
    sdk = openai.OpenAI(
        base_url=f"{gateway}/v1", api_key="unsent", max_retries=0, http_client=anonymous
    )
    with sdk, pytest.raises(openai.AuthenticationError) as refused:
        call(sdk)

    assert refused.value.code == "missing_api_key"
    assert demo.count("aimlapi") == 0


@pytest.mark.parametrize("endpoint", list(GATEWAY_CALLS), ids=" ".join)
def test_a_gateway_endpoint_refuses_a_key_with_every_scope_but_its_own(
    endpoint: tuple[str, str], gateway: str, demo: SimulatorHandle
) -> None:
    scope, call = GATEWAY_CALLS[endpoint]
    raw = make_client_key(name="wrong", scopes=everything_but(scope))

    sdk = openai.OpenAI(base_url=f"{gateway}/v1", api_key=raw, max_retries=0)
    with sdk, pytest.raises(openai.PermissionDeniedError) as refused:
        call(sdk)

    assert refused.value.code == "insufficient_scope"
    assert f"'{scope}'" in refused.value.message
    assert demo.count("aimlapi") == 0


@pytest.mark.parametrize("endpoint", list(GATEWAY_CALLS), ids=" ".join)
def test_a_gateway_endpoint_answers_a_key_with_only_its_scope(
    endpoint: tuple[str, str], gateway: str, demo: SimulatorHandle
) -> None:
    scope, call = GATEWAY_CALLS[endpoint]
    raw = make_client_key(name="right", scopes=[scope])

    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=raw, max_retries=0) as sdk:
        answer = call(sdk)

    assert answer, "an empty answer"
