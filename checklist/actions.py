"""Writes that touch several checklist rows, or have side effects. Views, jobs and
commands call these; they do not save checklist rows themselves."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from checklist.markdown import ParsedChecklist, ParsedItem, parse, slug
from checklist.models import Checklist, Item, Phase, Section


@dataclass
class ImportReport:
    checklist: Checklist
    counts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{n} {what}" for what, n in sorted(self.counts.items()) if n]
        return ", ".join(parts) or "nothing changed"


@transaction.atomic
def import_checklist(text: str, slug_: str = "", source_name: str = "") -> ImportReport:
    """Create or update a checklist from Markdown (checklist/markdown.py).

    Rows are matched by key (their heading path): a matched row takes the file's
    title, order and schedule but keeps its status, owner and history; a new row
    starts as the file says ([x] done, else to do); a row the file no longer has
    is archived, not deleted, so its history stays. Raises ChecklistSyntaxError
    before changing anything.
    """
    parsed = parse(text)
    checklist, created = Checklist.objects.get_or_create(
        slug=slug_ or slug(parsed.title), defaults={"title": parsed.title}
    )
    report = ImportReport(checklist)
    report.counts["checklists created"] += created
    checklist.title = parsed.title
    checklist.notes = parsed.notes
    checklist.source_name = source_name
    checklist.imported_at = timezone.now()
    checklist.save()
    _sync(checklist, parsed, report)
    return report


def _sync(checklist: Checklist, parsed: ParsedChecklist, report: ImportReport) -> None:
    phases = {p.key: p for p in checklist.phases.all()}
    sections = {(s.phase.key, s.key): s for s in Section.objects.filter(phase__checklist=checklist)}
    items = {i.key: i for i in checklist.items.all()}
    seen_phases, seen_sections, seen_items = set(), set(), set()
    position = 0

    def upsert(model_rows: dict[Any, Any], lookup: Any, make: Any, values: dict[str, Any]) -> Any:
        row = model_rows.get(lookup)
        name = make.__name__.lower()
        if row is None:
            row = make(**values)
            row.save()
            model_rows[lookup] = row
            report.counts[f"{name}s created"] += 1
            return row
        changed = [k for k, v in values.items() if getattr(row, k) != v]
        if changed:
            for k in changed:
                setattr(row, k, values[k])
            row.save(update_fields=changed)
            report.counts[f"{name}s updated"] += 1
        return row

    def sync_items(section: Section, parent: Item | None, parsed_items: list[ParsedItem]) -> None:
        nonlocal position
        for parsed_item in parsed_items:
            position += 1
            values = {
                "checklist": checklist,
                "section": section,
                "parent": parent,
                "key": parsed_item.key,
                "title": parsed_item.title,
                "detail": parsed_item.detail,
                "position": position,
                "depth": parsed_item.depth,
                "archived": False,
            }
            if parsed_item.key not in items:
                values["status"] = Item.Status.DONE if parsed_item.checked else Item.Status.TODO
            item = upsert(items, parsed_item.key, Item, values)
            seen_items.add(item.pk)
            sync_items(section, item, parsed_item.children)

    for phase_position, parsed_phase in enumerate(parsed.phases, start=1):
        phase = upsert(
            phases,
            parsed_phase.key,
            Phase,
            {
                "checklist": checklist,
                "key": parsed_phase.key,
                "title": parsed_phase.title,
                "position": phase_position,
                "start_day": parsed_phase.schedule.start,
                "end_day": parsed_phase.schedule.end,
                "archived": False,
            },
        )
        seen_phases.add(phase.pk)
        for section_position, parsed_section in enumerate(parsed_phase.sections, start=1):
            section = upsert(
                sections,
                (phase.key, parsed_section.key),
                Section,
                {
                    "phase": phase,
                    "key": parsed_section.key,
                    "title": parsed_section.title,
                    "position": section_position,
                    "start_day": parsed_section.schedule.start,
                    "end_day": parsed_section.schedule.end,
                    "archived": False,
                },
            )
            seen_sections.add(section.pk)
            sync_items(section, None, parsed_section.items)

    # One save per row (few rows): the audit log sees only saves (project/auditing.py).
    gone: list[Any] = [
        *checklist.items.filter(archived=False).exclude(pk__in=seen_items),
        *Section.objects.filter(phase__checklist=checklist, archived=False).exclude(
            pk__in=seen_sections
        ),
        *checklist.phases.filter(archived=False).exclude(pk__in=seen_phases),
    ]
    for row in gone:
        row.archived = True
        row.save(update_fields=["archived"])
        report.counts[f"{type(row).__name__.lower()}s archived"] += 1
