"""The stakeholders' pages: anonymous → wrong role → right role, then what each shows."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from django.test import Client

from checklist.actions import change_item, set_start_date, sign_off
from checklist.models import EvidenceResult, FallbackDrill, Item, SignOff, SignOffRole
from tests.checklist.factories import make_checklist, make_member

pytestmark = pytest.mark.django_db
URL = "/checklist/aimlapi-implementation-checklist/"


def client_for(user: object) -> Client:
    client = Client()
    client.force_login(user)  # type: ignore[arg-type]
    return client


def item(title: str) -> Item:
    return Item.objects.get(title=title)


@pytest.fixture
def checklist():  # type: ignore[no-untyped-def]
    return make_checklist()


def test_anonymous_is_sent_to_sign_in(checklist) -> None:  # type: ignore[no-untyped-def]
    for url in ["/checklist/", URL, f"{URL}report/", f"{URL}export.csv"]:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/checklist/login/")
    target = item("Implement EnhancedHybridAIClient class")
    response = Client().post(f"{URL}items/{target.code}/change/", {"status": "done"})
    assert response.status_code == 302 and "/checklist/login/" in response["Location"]
    assert item("Implement EnhancedHybridAIClient class").status == "todo"


def test_the_sign_in_page_signs_a_stakeholder_in(checklist) -> None:  # type: ignore[no-untyped-def]
    make_member("sam")
    client = Client()
    assert client.get("/checklist/login/").status_code == 200

    response = client.post("/checklist/login/", {"username": "sam", "password": "pw"})

    assert response.status_code == 302
    assert client.get("/checklist/", follow=True).redirect_chain[-1][0] == URL


def test_a_user_without_a_checklist_role_gets_403(checklist) -> None:  # type: ignore[no-untyped-def]
    finance = make_member("fin", role="Finance")
    assert client_for(finance).get(URL).status_code == 403


def test_a_viewer_reads_everything_and_changes_nothing(checklist) -> None:  # type: ignore[no-untyped-def]
    viewer = make_member("vera", role="Viewer", holds=("Finance Lead",))
    client = client_for(viewer)
    target = item("Implement EnhancedHybridAIClient class")

    page = client.get(URL)
    assert page.status_code == 200
    assert b"Implement EnhancedHybridAIClient class" in page.content
    assert b"Tick " not in page.content and b"Sign off as" not in page.content
    assert client.post(f"{URL}items/{target.code}/change/", {"status": "done"}).status_code == 403
    role = SignOffRole.objects.get(name="Finance Lead")
    assert client.post(f"{URL}roles/{role.code}/sign/", {"comment": "ok"}).status_code == 403
    assert client.post(f"{URL}evidence/").status_code == 403
    assert item("Implement EnhancedHybridAIClient class").status == "todo"
    assert not SignOff.objects.exists()


def test_a_stakeholder_ticks_an_item_and_comments_in_place(checklist) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_member("sam"))
    target = item("Implement EnhancedHybridAIClient class")
    change = f"{URL}items/{target.code}/change/"

    response = client.post(change, {"status": "done", "next": f"{URL}?filter=mine"})
    assert response.status_code == 302
    assert response["Location"] == f"{URL}?filter=mine#item-{target.code}"
    client.post(change, {"comment": "Reviewed in #42."})
    client.post(change, {"status": "", "comment": ""})  # nothing to record

    events = list(item("Implement EnhancedHybridAIClient class").events.order_by("id"))
    assert [(e.user_name, e.to_status, e.comment) for e in events] == [
        ("sam", "done", ""),
        ("sam", "done", "Reviewed in #42."),
    ]
    detail = client.get(f"{URL}items/{target.code}/")
    assert b"Reviewed in #42." in detail.content
    # A redirect never leaves the site.
    response = client.post(change, {"status": "todo", "next": "https://evil.example/"})
    assert response["Location"] == f"{URL}#item-{target.code}"


def test_a_stakeholder_signs_their_role_but_not_another(checklist) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_member("quinn", holds=("QA Lead",)))
    qa, security = (
        SignOffRole.objects.get(name="QA Lead"),
        SignOffRole.objects.get(name="Security Lead"),
    )
    page = client.get(URL).content.decode()
    assert "Sign off as QA Lead" in page and "Sign off as Security Lead" not in page

    assert client.post(f"{URL}roles/{security.code}/sign/", {"comment": "ok"}).status_code == 403
    response = client.post(f"{URL}roles/{qa.code}/sign/", {"comment": "Suite green."})

    assert response.status_code == 302
    signed = SignOff.objects.get()
    assert (signed.role, signed.user_name) == (qa, "quinn")
    assert "Signed by quinn" in client.get(URL).content.decode()
    response = client.post(f"{URL}sign-offs/{signed.code}/revoke/", {"reason": "Flaky test."})
    assert response.status_code == 302
    assert SignOff.objects.get().revoke_reason == "Flaky test."


def test_filters_show_mine_overdue_blocked_and_failing_evidence(checklist) -> None:  # type: ignore[no-untyped-def]
    sam = make_member("sam", holds=("DevOps Lead",))
    client = client_for(sam)
    set_start_date(checklist, date(2020, 1, 1))
    change_item(item("Rollback procedures"), None, Item.Status.BLOCKED)
    EvidenceResult.objects.create(key="cost_saving", status="fail", value="40%",
                                  measured_at="2026-11-01T00:00Z")  # fmt: skip

    def shown(name: str) -> set[str]:
        page = client.get(f"{URL}?filter={name}")
        return {
            i.title for view in page.context["phases"] for _, items in view.sections for i in items
        }

    assert shown("mine") == {"DevOps Lead"}  # the role's own sign-off line
    assert shown("blocked") == {"Rollback procedures"}
    failing = client.get(f"{URL}?filter=failing").context
    assert failing["shown"] == Item.objects.filter(evidence_key="cost_saving").count()
    overdue = client.get(f"{URL}?filter=overdue").context
    assert overdue["shown"] == Item.objects.exclude(due_on=None).exclude(status="done").count()


def test_the_progress_bars_count_closed_lines_per_phase(checklist) -> None:  # type: ignore[no-untyped-def]
    client = client_for(make_member("sam"))
    for title in ["Core API Integration", "Implement EnhancedHybridAIClient class"]:
        change_item(item(title), None, Item.Status.DONE)
    change_item(item("Set up request/response parsing logic"), None, Item.Status.NOT_APPLICABLE)

    phases = {v.phase.title: v for v in client.get(URL).context["phases"]}

    week1 = phases["Week 1: Foundation Integration"]
    assert (week1.closed, week1.total) == (3, 30)
    assert week1.percent == 10


def test_measure_now_and_the_drill_button_need_their_permissions(  # type: ignore[no-untyped-def]
    checklist, django_capture_on_commit_callbacks
) -> None:
    stakeholder = client_for(make_member("sam"))
    response = stakeholder.post(f"{URL}evidence/")
    assert response.status_code == 302
    assert EvidenceResult.objects.count() == 12
    assert stakeholder.post(f"{URL}drill/").status_code == 403

    operator = make_member("olga", role="Operator")
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(operator).post(f"{URL}drill/").status_code == 302
    assert FallbackDrill.objects.get().status == "queued"


def test_the_report_and_the_csv_hold_every_line_and_every_sign_off(checklist) -> None:  # type: ignore[no-untyped-def]
    quinn = make_member("quinn", holds=("QA Lead",))
    sign_off(SignOffRole.objects.get(name="QA Lead"), quinn, "Suite green.")
    client = client_for(make_member("vera", role="Viewer"))

    report = client.get(f"{URL}report/")
    assert report.status_code == 200 and b"@media print" in report.content
    assert b"Suite green." in report.content

    export = client.get(f"{URL}export.csv")
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    items = [r for r in rows if r["kind"] == "item"]
    assert len(items) == 202
    assert items[0]["title"] == "Create AIMLAPI Enterprise Account"
    signed = [r for r in rows if r["kind"] == "sign-off"]
    assert [(r["title"], r["status"], r["signed by"], r["comment"]) for r in signed] == [
        ("QA Lead", "signed", "quinn", "Suite green.")
    ]


def test_all_eight_signed_shows_the_checklist_complete(checklist) -> None:  # type: ignore[no-untyped-def]
    for i, role in enumerate(SignOffRole.objects.all()):
        holder = make_member(f"u{i}", holds=(role.name,))
        SignOff.objects.create(role=role, user=holder, user_name=holder.get_username(),  # type: ignore[attr-defined]
                               comment="ok")  # fmt: skip
    checklist.completed_at = "2026-11-27T10:00Z"
    checklist.save()

    page = client_for(make_member("vera", role="Viewer")).get(URL).content.decode()
    assert "Complete: all 8 roles signed off" in page
