"""The importer: the customer's CHECKLIST.md in, every item once, in order, where it belongs."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from checklist.actions import import_checklist
from checklist.data import CUSTOMER_CHECKLIST
from checklist.markdown import ChecklistSyntaxError, parse_schedule
from checklist.models import Checklist, Item, Phase, Section, SignOffRole

pytestmark = pytest.mark.django_db


def expected_items(text: str) -> list[tuple[str, str, str, int]]:
    """(phase, section, item line text, indent) for every '- [ ]' line: a parse that
    shares nothing with the importer's, so that the two check each other."""
    phase = section = ""
    found = []
    for line in text.splitlines():
        if line.startswith("## "):
            phase, section = line[3:].strip(), ""
        elif line.startswith("### "):
            section = line[4:].strip()
        elif line.lstrip().startswith("- [ ] ") or line.lstrip().startswith("- [x] "):
            body = line.lstrip()[6:].strip().replace("**", "")
            found.append((phase, section, body, len(line) - len(line.lstrip())))
    return found


def test_every_item_of_the_customers_checklist_appears_once_in_order_under_its_heading() -> None:
    text = CUSTOMER_CHECKLIST.read_text()
    expected = expected_items(text)

    import_checklist(text)

    rows = list(Item.objects.select_related("section__phase", "parent").order_by("position"))
    assert [(i.section.phase.title, i.section.title, i.text) for i in rows] == [
        (phase, section, body) for phase, section, body, _ in expected
    ]
    assert len(expected) == 202  # the file as the customer sent it
    # Nesting follows the indent: an indented line is under the last line above it with less.
    for row, (*_, indent) in zip(rows, expected, strict=True):
        assert (row.parent is not None) == (indent > 0), row.text
        if row.parent is not None:
            assert row.parent.position < row.position and row.parent.section_id == row.section_id


def test_phases_and_sections_keep_the_files_order() -> None:
    text = CUSTOMER_CHECKLIST.read_text()
    import_checklist(text)

    phases = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert list(Phase.objects.values_list("title", flat=True)) == phases
    sections = [line[4:].strip() for line in text.splitlines() if line.startswith("### ")]
    ordered = Section.objects.order_by("phase__position", "position")
    assert list(ordered.values_list("title", flat=True)) == sections
    checklist = Checklist.objects.get()
    assert checklist.title == "AIMLAPI Implementation Checklist"
    assert checklist.slug == "aimlapi-implementation-checklist"
    assert "Expected Completion" in checklist.notes


def test_reimporting_an_edited_file_updates_in_place_and_keeps_progress() -> None:
    text = CUSTOMER_CHECKLIST.read_text()
    import_checklist(text)
    item = Item.objects.get(title="Implement EnhancedHybridAIClient class")
    Item.objects.filter(pk=item.pk).update(status=Item.Status.DONE)
    count = Item.objects.count()

    edited = (
        text.replace(
            "  - [ ] Implement EnhancedHybridAIClient class\n",
            "  - [ ] Write the runbook first\n  - [ ] Implement EnhancedHybridAIClient class\n",
        )
        .replace("  - [ ] Load testing for concurrent requests\n", "")
        .replace("Negotiate volume discounts", "Negotiate volume discounts (Q3)")
    )
    report = import_checklist(edited)

    again = Item.objects.get(title="Implement EnhancedHybridAIClient class")
    assert again.pk == item.pk and again.status == Item.Status.DONE
    assert Item.objects.count() == count + 2  # the new line, and the reworded one
    assert Item.objects.get(title="Load testing for concurrent requests").archived
    assert Item.objects.get(title="Negotiate volume discounts for projected usage").archived
    new = Item.objects.get(title="Write the runbook first")
    assert new.position < again.position and new.parent == again.parent
    assert Checklist.objects.count() == 1
    assert report.counts["items created"] == 2


def test_reimporting_the_same_file_changes_nothing() -> None:
    text = CUSTOMER_CHECKLIST.read_text()
    import_checklist(text)

    report = import_checklist(text)

    assert report.summary() == "nothing changed"


def test_a_ticked_line_is_imported_done() -> None:
    import_checklist("# T\n## P\n### S\n- [x] **Done already**\n  - [ ] not yet\n")

    assert Item.objects.get(title="Done already").status == Item.Status.DONE
    assert Item.objects.get(title="not yet").status == Item.Status.TODO


def test_a_file_without_phases_is_refused_and_changes_nothing() -> None:
    with pytest.raises(ChecklistSyntaxError):
        import_checklist("# Just a title\n- some text\n")
    assert not Checklist.objects.exists()


@pytest.mark.parametrize(
    ("heading", "days"),
    [
        ("Day 1-2: Basic Integration", (1, 2)),
        ("Day 8-10: Context-Aware Processing", (8, 10)),
        ("Week 1: Foundation Integration", (1, 7)),
        ("Week 3: Production Preparation", (15, 21)),
        ("Post-Implementation (Week 5+)", (29, None)),
        ("Pre-Implementation Setup", (None, 0)),
        ("Success Criteria Validation", (None, None)),
    ],
)
def test_headings_name_programme_days(heading: str, days: tuple[int | None, int | None]) -> None:
    schedule = parse_schedule(heading)
    assert (schedule.start, schedule.end) == days


def test_the_command_imports_a_file_and_reports_a_bad_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = StringIO()
    call_command("import_checklist", str(CUSTOMER_CHECKLIST), stdout=out)
    assert "202 items created" in out.getvalue()

    bad = tmp_path / "bad.md"
    bad.write_text("no heading at all\n")
    with pytest.raises(CommandError, match=r"bad\.md: line 1: .*Nothing was changed"):
        call_command("import_checklist", str(bad))
    missing = tmp_path / "missing.md"
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_checklist", str(missing))


def test_the_sign_off_lines_become_the_eight_roles_each_owning_its_line() -> None:
    import_checklist(CUSTOMER_CHECKLIST.read_text())

    roles = list(SignOffRole.objects.select_related("item"))
    assert [r.name for r in roles] == [
        "Engineering Lead",
        "DevOps Lead",
        "QA Lead",
        "Security Lead",
        "Product Manager",
        "Finance Lead",
        "Operations Lead",
        "Executive Sponsor",
    ]
    qa = roles[2]
    assert qa.responsibility == "Testing and quality validation"
    assert qa.item is not None and qa.item.owner_role == qa

    import_checklist(CUSTOMER_CHECKLIST.read_text())
    assert SignOffRole.objects.count() == 8


def test_the_admin_action_imports_an_edited_file_into_the_selected_checklist(
    admin_client,  # type: ignore[no-untyped-def]
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    text = CUSTOMER_CHECKLIST.read_text()
    checklist = import_checklist(text).checklist
    selected = {"action": "import_markdown", "_selected_action": [checklist.pk]}

    form = admin_client.post("/admin/checklist/checklist/", selected)
    assert form.status_code == 200 and b'enctype="multipart/form-data"' in form.content

    edited = text.replace("- [ ] Rollback procedures\n", "- [ ] Rollback procedures, rehearsed\n")
    upload = SimpleUploadedFile("CHECKLIST.md", edited.encode())
    response = admin_client.post(
        "/admin/checklist/checklist/", {**selected, "apply": "1", "markdown": upload}
    )

    assert response.status_code == 302
    assert Item.objects.get(title="Rollback procedures, rehearsed").checklist == checklist
    assert Item.objects.get(title="Rollback procedures").archived
    bad = SimpleUploadedFile("bad.md", b"# Title only\n")
    page = admin_client.post("/admin/checklist/checklist/", {**selected, "apply": "1",
                                                              "markdown": bad})  # fmt: skip
    assert b"Nothing was changed" in page.content
