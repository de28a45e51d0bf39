"""Runbooks: docs/runbooks/<kind>.md, rendered in the admin beside each incident of that kind.

Markdown with its raw-HTML handling switched off, so a tag written in a runbook
is shown as text and never reaches the page as markup.
"""

from __future__ import annotations

from pathlib import Path

import markdown
from django.conf import settings
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from project.models import RUNBOOKS

RUNBOOK_DIR = Path(settings.BASE_DIR) / "docs" / "runbooks"


def runbook_path(slug: str) -> Path:
    if slug not in RUNBOOKS:  # only the known names: never a path built from input
        raise KeyError(slug)
    return RUNBOOK_DIR / f"{slug}.md"


def render_runbook(slug: str) -> SafeString:
    """The runbook as HTML: headings, lists, tables, code; any raw HTML escaped."""
    converter = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists", "toc"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    html = converter.convert(runbook_path(slug).read_text(encoding="utf-8"))
    for other in RUNBOOKS:  # a link to another runbook's file opens its page here
        html = html.replace(f'href="{other}.md"', f'href="{runbook_path_in_admin(other)}"')
    # Raw HTML is off (above): every tag written in the source was escaped.
    return mark_safe(html)


def runbook_path_in_admin(slug: str) -> str:
    return reverse(f"admin:project_runbook_{slug}")
