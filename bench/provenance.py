"""What every benchmark records beside its numbers: the machine, the code, and where
its generated section of RESULTS.md goes (the hand-written text around it is kept)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    """'2 vCPU (AMD EPYC ...), 24 GiB, kernel ...'."""
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next(
            ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.TimeoutExpired):
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1048576)
    return f"{os.cpu_count()} vCPU ({model}), {mem} GiB, kernel {platform.release()}"


def git_revision() -> str:
    """The short commit, and whether tracked files differ from it."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def replace_section(path: Path, begin: str, end: str, report: str) -> None:
    """Put ``report`` between the ``begin`` and ``end`` markers of ``path`` (appended,
    markers and all, when they are not there yet)."""
    section = f"{begin}\n{report.strip(chr(10))}\n{end}"
    text = path.read_text() if path.exists() else "# Switchboard benchmark results\n"
    start, stop = text.find(begin), text.find(end)
    if start != -1 and stop != -1:
        text = text[:start] + section + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
