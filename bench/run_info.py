"""What every benchmark result records about its run: date, commit and machine."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The short commit of the checkout, with "+dirty" when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def run_info() -> dict[str, str]:
    return {"date": date.today().isoformat(), "commit": commit(), "machine": cpu_machine()}
