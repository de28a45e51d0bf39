"""Reading a checklist written in Markdown: the customer's CHECKLIST.md and files like it.

    # Title                          the checklist
    ## Week 1: Foundation            a phase (its heading may carry a schedule)
    ### Day 1-2: Basic Integration   a section of that phase (likewise)
    - [ ] **Group**                  an item
      - [ ] Sub-item                 an item under the one above (any deeper indent)
    - [ ] **Title**: detail          an item with a bold title and its detail

Everything else (blank lines, rules, the closing status lines) is kept as the
checklist's notes. Each phase, section and item gets a key built from the slugs
of its heading path, so a re-import finds the same rows again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.utils.text import slugify

HEADING = re.compile(r"^(#{1,3})\s+(.*?)\s*#*\s*$")
ITEM = re.compile(r"^(\s*)[-*+]\s+\[([ xX])\]\s+(.*?)\s*$")
TITLED = re.compile(r"^\*\*(.+?)\*\*(?::\s*(.*))?$")
DAYS = re.compile(r"\bDays?\s+(\d+)(?:\s*[-\u2013]\s*(\d+))?", re.IGNORECASE)
WEEKS = re.compile(r"\bWeeks?\s+(\d+)(?:\s*[-\u2013]\s*(\d+))?(\+)?", re.IGNORECASE)
PRE = re.compile(r"^Pre[- ]", re.IGNORECASE)
SLUG_LENGTH = 60


class ChecklistSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Schedule:
    """Programme days a heading names: day 1 is the start date. ``end`` None: open-ended."""

    start: int | None
    end: int | None

    @property
    def known(self) -> bool:
        return self.start is not None or self.end is not None


NO_SCHEDULE = Schedule(None, None)


def parse_schedule(heading: str) -> Schedule:
    """ "Day 1-2" → days 1 to 2; "Week 3" → days 15 to 21; "Week 5+" → from day 29 on;
    "Pre-Implementation" → before day 1 (due the day before the start)."""
    if match := DAYS.search(heading):
        first = int(match[1])
        return Schedule(first, int(match[2] or first))
    if match := WEEKS.search(heading):
        first, last = int(match[1]), int(match[2] or match[1])
        return Schedule((first - 1) * 7 + 1, None if match[3] else last * 7)
    if PRE.match(heading):
        return Schedule(None, 0)
    return NO_SCHEDULE


@dataclass
class ParsedItem:
    key: str
    title: str
    detail: str
    checked: bool
    line: int
    depth: int
    children: list[ParsedItem] = field(default_factory=list)

    @property
    def text(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title


@dataclass
class ParsedSection:
    key: str
    title: str
    schedule: Schedule
    items: list[ParsedItem] = field(default_factory=list)


@dataclass
class ParsedPhase:
    key: str
    title: str
    schedule: Schedule
    sections: list[ParsedSection] = field(default_factory=list)


@dataclass
class ParsedChecklist:
    title: str
    phases: list[ParsedPhase] = field(default_factory=list)
    notes: str = ""

    def items(self) -> list[ParsedItem]:
        """Every item, depth first, in the file's order."""
        found: list[ParsedItem] = []

        def walk(items: list[ParsedItem]) -> None:
            for item in items:
                found.append(item)
                walk(item.children)

        for phase in self.phases:
            for section in phase.sections:
                walk(section.items)
        return found


def slug(text: str) -> str:
    return slugify(text)[:SLUG_LENGTH].strip("-") or "untitled"


class _Keys:
    """Keys unique within a checklist: a second "Testing & Validation" under the same
    parent becomes ".../testing-validation-2"."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def make(self, parent: str, text: str) -> str:
        base = f"{parent}/{slug(text)}" if parent else slug(text)
        key, n = base, 1
        while key in self.used:
            n += 1
            key = f"{base}-{n}"
        self.used.add(key)
        return key


def split_title(text: str) -> tuple[str, str]:
    if match := TITLED.match(text):
        return match[1].strip(), (match[2] or "").strip()
    return text.replace("**", "").strip(), ""


def parse(text: str) -> ParsedChecklist:
    checklist = ParsedChecklist(title="")
    keys = _Keys()
    notes: list[str] = []
    phase: ParsedPhase | None = None
    section: ParsedSection | None = None
    # Open items by indent, outermost first: a deeper indent nests under the last shallower one.
    open_items: list[tuple[int, ParsedItem]] = []

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if heading := HEADING.match(line):
            level, title = len(heading[1]), heading[2].strip()
            open_items = []
            if level == 1:
                if not checklist.title:
                    checklist.title = title
                else:
                    notes.append(line)
            elif level == 2:
                phase = ParsedPhase(keys.make("", title), title, parse_schedule(title))
                checklist.phases.append(phase)
                section = None
            else:
                if phase is None:
                    raise ChecklistSyntaxError(number, f"section '{title}' before any phase (##)")
                section = ParsedSection(keys.make(phase.key, title), title, parse_schedule(title))
                phase.sections.append(section)
            continue
        if item_match := ITEM.match(line):
            if phase is None:
                raise ChecklistSyntaxError(number, "an item before any phase (##)")
            if section is None:
                # Items straight under a phase heading go into an untitled section.
                section = ParsedSection(keys.make(phase.key, "items"), "", NO_SCHEDULE)
                phase.sections.append(section)
            indent = len(item_match[1].expandtabs(4))
            while open_items and open_items[-1][0] >= indent:
                open_items.pop()
            parent = open_items[-1][1] if open_items else None
            title, detail = split_title(item_match[3])
            if not title:
                raise ChecklistSyntaxError(number, "an item without text")
            item = ParsedItem(
                key=keys.make(parent.key if parent else section.key, title),
                title=title,
                detail=detail,
                checked=item_match[2] in "xX",
                line=number,
                depth=len(open_items),
            )
            (parent.children if parent else section.items).append(item)
            open_items.append((indent, item))
            continue
        if line.strip():
            open_items = []
            if line.strip() != "---":
                notes.append(line.strip())
    if not checklist.title:
        raise ChecklistSyntaxError(1, "no title (a '# ' heading)")
    if not checklist.phases:
        raise ChecklistSyntaxError(1, "no phases ('## ' headings)")
    checklist.notes = "\n".join(notes)
    return checklist
