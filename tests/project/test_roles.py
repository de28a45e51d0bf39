"""Roles walk the admin: anonymous, wrong role, right role.

First the pages that matter most, by hand; then every admin page the URL
resolver knows, against what ROLES grants.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db.models import Model
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from billing.models import ContentSample, UsageRecord
from project.alerts import raise_alert
from project.incidents import open_incident
from project.models import Channel
from project.roles import ADMINISTRATOR_ONLY, GATEWAY_APPS, ROLES
from routing.models import (
    Batch,
    BreakerEvent,
    ClientKey,
    Deployment,
    DeploymentHealth,
    Feedback,
    JudgeScore,
    Organisation,
    ProbeResult,
    QualityRule,
)
from tests.checklist.factories import seed_checklist
from tests.factories import load_demo_config, make_client_key

pytestmark = pytest.mark.django_db

PAGES = {
    "providers": "/admin/routing/provider/",
    "client keys": "/admin/routing/clientkey/",
    "budgets": "/admin/billing/budget/",
    "spend dashboard": "/admin/billing/budget/dashboard/",
    "savings": "/admin/billing/usagerecord/savings/",
    "key audit": "/admin/routing/clientkey/audit/",
    "alert channels": "/admin/project/channel/",
    "content samples": "/admin/billing/contentsample/",
    "job queues": "/admin/django_rq/dashboard/",
    "provider status": "/admin/routing/deploymenthealth/",
    "monitoring": "/admin/routing/monitoring/",
    "performance report": "/admin/routing/monitoring/report/",
}
# Which role may open which page (view); every other role gets 403.
MAY_VIEW = {
    "Administrator": set(PAGES),
    "Operator": set(PAGES) - {"content samples"},
    "Finance": {
        "providers",
        "budgets",
        "spend dashboard",
        "savings",
        "alert channels",
        "monitoring",
        "performance report",
    },
    "Stakeholder": {"budgets", "spend dashboard"},
    # The job queues' pages empty queues and delete jobs; samples hold user content.
    "Viewer": set(PAGES) - {"content samples", "job queues"},
}


def member_of(role: str) -> Client:
    user = User.objects.create_user(
        role.lower(), f"{role.lower()}@example.com", "pw", is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_the_migration_created_the_five_roles() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)


@pytest.mark.parametrize("role", list(MAY_VIEW))
def test_each_role_sees_its_pages_and_no_others(role: str) -> None:
    client = member_of(role)
    for page, url in PAGES.items():
        expected = 200 if page in MAY_VIEW[role] else 403
        assert client.get(url).status_code == expected, (role, page)


@pytest.mark.parametrize("url", list(PAGES.values()))
def test_anonymous_is_sent_to_the_login_page(url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_viewer_cannot_change_what_it_sees() -> None:
    viewer = member_of("Viewer")
    assert viewer.get("/admin/routing/provider/add/").status_code == 403
    assert viewer.get("/admin/billing/budget/add/").status_code == 403


def test_only_administrators_hold_content_sample_and_erasure_permissions() -> None:
    for role in ROLES:
        codenames = set(Group.objects.get(name=role).permissions.values_list("codename", flat=True))
        private = {c for c in codenames if c.endswith("_contentsample") or c == "forget_end_user"}
        if role == "Administrator":
            assert private == {
                "add_contentsample",
                "change_contentsample",
                "delete_contentsample",
                "view_contentsample",
                "forget_end_user",
            }
        else:
            assert private == set(), role


def test_finance_edits_budgets_but_not_routes() -> None:
    finance = member_of("Finance")
    assert finance.get("/admin/billing/budget/add/").status_code == 200
    assert finance.get("/admin/routing/route/add/").status_code == 403


# -- every admin page, discovered --------------------------------------------------------
#
# The walk reads the admin's URLs from the URL resolver, so a model registered
# or a page added later is walked too. What each role should get comes from
# ROLES (project/roles.py), the one statement of who may do what; the admin
# must enforce it on every page.

NOT_WALKED = {
    "/admin/login/": "public by design",
    "/admin/logout/": "POST only",
    "/admin/autocomplete/": "a JSON endpoint for one field of one form",
    "/admin/r/<path:content_type_id>/<path:object_id>/": "redirects to the site",
    "/admin/(?P<url>.*)": "the catch-all that answers 404",
    "/admin/django_rq/dashboard/queues/confirm-action/<int:queue_index>/": "POST only",
    "/admin/django_rq/dashboard/queues/actions/<int:queue_index>/": "POST only",
    "/admin/project/incident/<path:object_id>/act/": "POST only; see test_incident_pages.py",
}
# Parameters the walk can fill; a page with any other parameter is walked only
# under django_rq, whose permission check wraps all its pages alike.
FILLABLE = {"object_id", "id", "queue_index", "app_label"}
CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


@dataclass(frozen=True)
class Page:
    url: str
    model: type[Model] | None  # None: a site page every staff user may open, or an app index
    action: str  # the permission it needs: view, add, change, delete, or a custom one
    obj: Model | None = None
    app: str = ""  # for an app index: its app label


def admin_routes() -> Iterator[str]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern)

    for route in walk(get_resolver().url_patterns, "/"):
        if route.startswith("/admin/"):
            yield route.replace("^", "").replace("$", "")


def seed() -> None:
    """One row of every model the admin shows, so its object pages are walked."""
    load_demo_config("http://127.0.0.1:9")
    make_client_key()
    ClientKey.objects.update(
        organisation=Organisation.objects.create(name="Northside Clinic", industry="healthcare")
    )
    Channel.objects.create(kind="email", name="ops", target="ops@example.com")
    raise_alert("budget_threshold", "budget:global:monthly", "Global budget 70% spent")
    UsageRecord.objects.create(request_id="req-walk", status=UsageRecord.Status.OK)
    ContentSample.objects.create(request_id="req-walk", status=UsageRecord.Status.OK)
    BreakerEvent.objects.create(
        deployment=Deployment.objects.first(), from_state="closed", to_state="open"
    )
    ProbeResult.objects.create(deployment=Deployment.objects.first(), ok=True, latency_ms=120)
    DeploymentHealth.objects.create(deployment=Deployment.objects.first(), state="up")
    Batch.objects.create(client_key=ClientKey.objects.get(), total=0)
    seed_experiments()
    QualityRule.objects.get_or_create(key="refusal", defaults={"weight": 60})
    Feedback.objects.create(request_id="req-walk", kind="thumbs", rating=1, positive=True)
    JudgeScore.objects.create(request_id="req-walk", score=8, judge_route="judge")
    seed_checklist()
    open_incident("provider_outage", "provider:openai", "OpenAI is down")


def seed_experiments() -> None:
    from routing.models import Experiment, Rollout, RolloutEvent, Route, Variant

    route = Route.objects.get(name="summary")
    experiment = Experiment.objects.create(name="walk", route=route)
    Variant.objects.create(experiment=experiment, name="a", deployment=Deployment.objects.first())
    Rollout.objects.all().delete()  # the demo's draft: one rollout per route
    rollout = Rollout.objects.create(route=route, legacy_chain=["openai/gpt-4o-mini"])
    RolloutEvent.objects.create(rollout=rollout, kind="started", from_percent=0, to_percent=0)


def discover() -> list[Page]:
    pages: dict[str, Page] = {}
    for route in admin_routes():
        if route in NOT_WALKED:
            continue
        params = {a or b for a, b in CONVERTER.findall(route)}
        if route.startswith("/admin/django_rq/") and params - FILLABLE:
            continue
        assert not params - FILLABLE, f"{route}: teach the walk a value for {params - FILLABLE}"
        for page in pages_of(route, params):
            pages.setdefault(page.url, page)  # django_rq serves its dashboard twice
    return list(pages.values())


def pages_of(route: str, params: set[str]) -> list[Page]:
    if "app_label" in params:
        labels = {model._meta.app_label for model in admin.site._registry}
        return [Page(f"/admin/{label}/", None, "any", app=label) for label in sorted(labels)]
    registered = {
        f"/admin/{m._meta.app_label}/{m._meta.model_name}/": m for m in admin.site._registry
    }
    prefix = next((p for p in registered if route.startswith(p)), None)
    if prefix is None:
        return [Page(route, None, "staff")]
    model, rest = registered[prefix], route.removeprefix(prefix)
    action = "view"
    if rest == "add/":
        action = "add"
    elif rest.endswith("delete/"):
        action = "delete"
    elif rest.endswith("password/"):
        action = "change"
    elif rest == "<path:object_id>/":
        return []  # a redirect to the change page
    elif model._meta.label_lower == "django_rq.dashboard":
        action = "admin"  # its own permission, "Access admin page"
    obj = None
    if params & {"object_id", "id"}:
        if not model._meta.managed:
            return []  # no table, so no objects (django_rq's dashboard)
        obj = model._default_manager.order_by("pk").first()
        if obj is None:
            assert model._meta.app_label not in GATEWAY_APPS, (
                f"seed() makes no {model._meta.label}, so its object pages go unwalked"
            )
            return []
    values = {"queue_index": "0"}
    if obj is not None:
        values["object_id"] = values["id"] = str(obj.pk)
    url = CONVERTER.sub(lambda m: values[m[1] or m[2]], route)
    if rest.endswith("auditlog/"):
        # An object's audit log page shows log entries: it needs the log's permission.
        from auditlog.models import LogEntry

        return [Page(url, LogEntry, "view", obj)]
    return [Page(url, model, action, obj)]


def granted(role: str, label: str, action: str) -> bool:
    if role == "Administrator":
        return True
    if label in ADMINISTRATOR_ONLY:
        return False
    grants = ROLES[role]
    actions = grants.get(label) or grants.get(label.split(".")[0] + ".*") or ()
    return action in actions or (action == "view" and "change" in actions)


def expected(role: str, page: Page, superuser: HttpRequest) -> int:
    if page.app:
        may = role == "Administrator" or any(
            actions and label.split(".")[0] == page.app for label, actions in ROLES[role].items()
        )
        return 200 if may else 404  # the admin hides an app index it would show empty
    if page.model is None:
        return 200
    model_admin = admin.site.get_model_admin(page.model)
    # What the admin allows nobody, whatever their role (an append-only ledger, say).
    if page.action == "add" and not model_admin.has_add_permission(superuser):
        return 403
    if page.action == "delete" and not model_admin.has_delete_permission(superuser, page.obj):
        return 403
    return 200 if granted(role, page.model._meta.label_lower, page.action) else 403


def superuser_request() -> HttpRequest:
    request = RequestFactory().get("/admin/")
    request.user = User.objects.create_superuser("root", "root@example.com", "pw")
    return request


def test_the_walk_finds_every_hand_listed_page_and_the_custom_ones() -> None:
    seed()
    urls = {page.url for page in discover()}

    assert set(PAGES.values()) <= urls
    key = ClientKey.objects.get()
    assert f"/admin/routing/clientkey/{key.pk}/change/" in urls
    assert "/admin/django_rq/dashboard/queues/0/empty/" in urls


@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_gets_every_admin_page_its_permissions_allow_and_no_other(role: str) -> None:
    seed()
    client = member_of(role)
    superuser = superuser_request()

    wrong = []
    for page in discover():
        want = expected(role, page, superuser)
        got = client.get(page.url).status_code
        if got != want:
            wrong.append(f"{page.url}: {got}, expected {want}")

    assert wrong == [], "\n".join(wrong)


def test_anonymous_is_sent_to_the_login_page_from_every_admin_page() -> None:
    seed()

    shown = []
    for page in discover():
        response = Client().get(page.url)
        refused = response.status_code in (401, 403)
        if not refused and not (
            response.status_code == 302 and "/admin/login/" in response["Location"]
        ):
            shown.append(f"{page.url}: {response.status_code}")

    assert shown == []
