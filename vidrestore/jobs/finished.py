"""Is an output finished? OUT exists and its log ends with a complete summary line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_TAIL_BYTES = 1 << 20  # a summary line is a few kB; the tail is read, not the whole log


def finished_summary(output: Path, log: Path) -> dict[str, Any] | None:
    """The summary a finished run wrote at the end of `log`, or None when `output` or the
    log is missing or the log does not end with a summary (a run still going or killed)."""
    if not output.is_file() or not log.is_file():
        return None
    try:
        with open(log, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            lines = file.read().splitlines()
    except OSError:
        return None
    if not lines:
        return None
    try:
        last = json.loads(lines[-1])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    summary = last.get("summary") if isinstance(last, dict) else None
    if not isinstance(summary, dict) or "frames_out" not in summary:
        return None
    return summary
