"""The batch journal: one JSON line per task event (started, committed, skipped, failed),
appended to OUTDIR/.vidrestore-batch.jsonl by whichever worker ran the task.

It is the record of where each output was made and how many attempts it took: a worker
killed mid-task leaves a `started` with no `committed`, its retry adds another `started`.
Each line is one `write` to a file opened with O_APPEND, so lines from many workers do not
interleave (on a local or NFS-style shared folder).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

JOURNAL_NAME = ".vidrestore-batch.jsonl"


def journal_path(outdir: Path) -> Path:
    return outdir / JOURNAL_NAME


def where() -> dict[str, Any]:
    """This worker: host and process id."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def append(journal: Path, event: str, key: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "key": key, "time": round(time.time(), 3), **where(),
                       **fields}) + "\n"
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(journal: Path) -> list[dict[str, Any]]:
    if not journal.is_file():
        return []
    events = []
    for line in journal.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return events
