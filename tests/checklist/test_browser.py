"""In a real browser: headless Chromium (Debian's, never downloaded) driven by Playwright.

A stakeholder signs in, ticks an item, signs off their own role and cannot sign
another; a viewer cannot tick anything. The same runs take the screenshots that
docs/guide-stakeholder.md and docs/guide-admin.md show, so the pictures follow the UI.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

from checklist.actions import change_item, evaluate_evidence, run_fallback_drill, set_start_date
from checklist.models import FallbackDrill, Item, SignOff, SignOffRole
from routing.models import Provider, Route
from tests.checklist.factories import make_checklist, make_member
from tests.factories import load_demo_config
from tests.servers import RunningServer, SimulatorHandle, start_server

playwright = pytest.importorskip("playwright.sync_api")

IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
URL = "/checklist/aimlapi-implementation-checklist/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (make test does)")
    # Playwright's sync API keeps an event loop running in this thread; the test's own
    # ORM calls between browser steps are sync code all the same.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def site() -> Iterator[RunningServer]:
    """Django over ASGI with its static files (the admin's CSS), as `make run` serves it."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application

    server = start_server(ASGIStaticFilesHandler(get_asgi_application()), lifespan="off")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, site: RunningServer, transactional_db: None) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=site.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


def sign_in(page: Any, username: str, password: str = "pw") -> None:
    page.goto("/checklist/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{URL}")


def shot(target: Any, name: str, **options: Any) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(IMG / name), **options)


def forged_post(page: Any, path: str, data: dict[str, str]) -> int:
    """POST from the signed-in page with its CSRF token, as a hand-made form would."""
    return int(
        page.evaluate(
            """async ([path, data]) => {
                const body = new URLSearchParams(data);
                const token = document.querySelector("input[name=csrfmiddlewaretoken]");
                body.set("csrfmiddlewaretoken", token ? token.value : "");
                const r = await fetch(path, {method: "POST", body, redirect: "manual"});
                return r.status;
            }""",
            [path, data],
        )
    )


def test_a_stakeholder_ticks_an_item_and_signs_off_only_their_own_role(page: Any) -> None:
    load_demo_config("http://127.0.0.1:9")  # a gateway to measure, for the pictures
    call_command("seed_usage_history", stdout=StringIO())
    checklist = make_checklist()
    set_start_date(checklist, checklist.created.date())
    make_member("quinn", holds=("QA Lead",))
    evaluate_evidence()
    target = Item.objects.get(title="Implement EnhancedHybridAIClient class")

    page.goto(URL)
    assert "/checklist/login/" in page.url  # anonymous: sign in first
    shot(page, "stakeholder-sign-in.png")
    sign_in(page, "quinn")
    shot(page, "stakeholder-checklist.png")

    row = page.locator(f"#item-{target.code}")
    row.get_by_role("button", name=f"Tick {target.title}").click()
    page.wait_for_load_state()
    assert row.locator(".status").inner_text() == "Done"
    assert Item.objects.get(pk=target.pk).status == "done"
    assert target.events.get().user_name == "quinn"
    row.get_by_label(f"Comment on {target.title}").fill("Merged in #12, reviewed by Sam.")
    row.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    shot(
        page.locator(f"#item-{target.code}").locator("xpath=ancestor::table"),
        "stakeholder-tick.png",
    )
    page.goto(f"{URL}items/{target.code}/")
    assert "Merged in #12" in page.content()
    shot(page, "stakeholder-item-history.png")

    page.goto(f"{URL}#sign-offs")
    security = SignOffRole.objects.get(name="Security Lead")
    assert page.get_by_role("button", name="Sign off as Security Lead").count() == 0
    assert forged_post(page, f"{URL}roles/{security.code}/sign/", {"comment": "ok"}) == 403
    page.get_by_label("Sign-off comment for QA Lead").fill("Suite green; the drill passed 11/11.")
    page.get_by_role("button", name="Sign off as QA Lead").click()
    page.wait_for_load_state()
    signed = SignOff.objects.get()
    assert (signed.role.name, signed.user_name) == ("QA Lead", "quinn")
    assert "Signed by quinn" in page.locator("#sign-offs").inner_text()
    shot(page.locator("#sign-offs"), "stakeholder-sign-off.png")
    shot(page.locator("#evidence"), "stakeholder-evidence.png")


def test_a_viewer_cannot_tick_anything(page: Any) -> None:
    make_checklist()
    make_member("vera", role="Viewer", holds=("Finance Lead",))
    target = Item.objects.get(title="Implement EnhancedHybridAIClient class")

    sign_in(page, "vera")

    assert page.get_by_role("button", name="Tick ").count() == 0
    assert page.locator("select[name=status]").count() == 0
    assert page.get_by_role("button", name="Sign off as Finance Lead").count() == 0
    status = forged_post(page, f"{URL}items/{target.code}/change/", {"status": "done"})
    assert status == 403
    assert Item.objects.get(pk=target.pk).status == "todo"


def test_the_report_prints_and_the_filters_narrow_the_list(page: Any) -> None:
    checklist = make_checklist()
    set_start_date(checklist, checklist.created.date().replace(day=1))
    change_item(Item.objects.get(title="Rollback procedures"), None, Item.Status.BLOCKED)
    make_member("sam", holds=("DevOps Lead",))
    evaluate_evidence()

    sign_in(page, "sam")
    page.get_by_role("link", name="Blocked").click()
    page.wait_for_url("**filter=blocked")
    assert page.locator("tr.item").count() == 1
    shot(page, "stakeholder-filter-blocked.png")

    page.goto(f"{URL}report/")
    page.emulate_media(media="print")
    assert page.locator("form").first.is_hidden()
    shot(page, "stakeholder-report.png")


# -- the admin guide's pictures -----------------------------------------------------------


@pytest.fixture
def admin_page(page: Any, demo: SimulatorHandle) -> Any:
    from django.contrib.auth.models import User

    Provider.objects.update(read_timeout=0.5, connect_timeout=0.5)
    call_command("seed_usage_history", stdout=StringIO())
    User.objects.create_superuser("admin", "admin@example.com", "admin-pw")
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin-pw")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    return page


def test_the_admin_pages_of_the_guide(admin_page: Any) -> None:
    page = admin_page
    pages = {
        "admin-providers.png": "/admin/routing/provider/",
        "admin-budgets.png": "/admin/billing/budget/",
        "admin-client-keys.png": "/admin/routing/clientkey/",
        "admin-dashboard.png": "/admin/billing/budget/dashboard/",
        "admin-savings.png": "/admin/billing/usagerecord/savings/",
    }
    route = Route.objects.get(name="summary")
    pages["admin-route.png"] = f"/admin/routing/route/{route.pk}/change/"
    for name, path in pages.items():
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        shot(page, name)

    make_checklist()
    drill = FallbackDrill.objects.create()

    # In a thread of its own, as in a worker: the drill runs an event loop of its own,
    # and Playwright's is running in this one.
    def work() -> None:
        try:
            run_fallback_drill(drill)
        finally:
            connections.close_all()  # this thread's; the test database is dropped at the end

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=120)
    drill.refresh_from_db()
    assert drill.status == "passed", drill.scenarios
    evaluate_evidence()
    page.goto("/admin/checklist/fallbackdrill/")
    shot(page, "admin-drills.png")
    page.goto(f"{URL}#evidence")
    shot(page.locator("#evidence"), "admin-drill-evidence.png")
