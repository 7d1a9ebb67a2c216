"""The unit of work a batch worker runs: one file, or one segment of a file, restored.

A task is a plain picklable value (a Ray task's argument, a worker process's). Running it
is idempotent: a finished output (OUT and a log with a complete summary) is skipped, so a
task retried after its worker died, or a rerun of the whole batch, never writes an output
twice; a run that dies leaves only partial files, which the next run in that folder
removes (their process is gone). Each attempt is journalled (see `journal`).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import VidrestoreError
from ..frame_range import FrameRange
from . import journal
from .finished import finished_summary

ProgressSink = Callable[[str, int], None]  # (task key, frames written so far)


@dataclass(frozen=True)
class Task:
    key: str  # unique in the batch: the output's name, with "#N" for segment N
    input: str
    output: str
    log: str
    config: RunConfig
    journal: str
    frames: int = 0  # frames it writes, for the batch's progress bar (0: unknown)
    frame_range: FrameRange | None = None
    place: dict[str, Any] = field(default_factory=dict)  # filled in by the executor


def run_task(task: Task, progress: ProgressSink | None = None) -> dict[str, Any]:
    """Restore `task` (or find it done); return its row for the batch summary. Errors are
    returned in the row (`status` "failed", `error`, `exit_code`), not raised, so one bad
    file does not stop the batch and is not retried as if its worker had died."""
    output, log = Path(task.output), Path(task.log)
    place = {**journal.where(), **task.place, "device": task.config.device}
    done = finished_summary(output, log)
    if done is not None:
        journal.append(Path(task.journal), "skipped", task.key, output=task.output)
        return _row(task, "skipped", done, place)
    if output.exists():  # a run cut between its two renames, or a file put there: not
        error = (f"{output}: exists, but its log {log.name} does not end with a summary; "
                 "remove the output to restore it again")  # ours to replace
        journal.append(Path(task.journal), "failed", task.key, error=error)
        return {**_row(task, "failed", None, place), "error": error, "exit_code": 2}
    journal.append(Path(task.journal), "started", task.key, output=task.output)
    from ..api import restore

    def report(written: int, _total: int) -> None:
        if progress is not None:
            progress(task.key, written)

    try:
        summary = restore(task.input, output, config=task.config, log_path=log,
                          progress=report, segment=task.frame_range)
    except VidrestoreError as exc:
        done = finished_summary(output, log)
        if done is not None:  # another attempt (Ray retried a task it thought lost) won the
            journal.append(Path(task.journal), "skipped", task.key,  # commit; it is done
                           output=task.output, note=str(exc))
            return _row(task, "skipped", done, place)
        journal.append(Path(task.journal), "failed", task.key, error=str(exc))
        return {**_row(task, "failed", None, place), "error": str(exc),
                "exit_code": exc.exit_code}
    except Exception as exc:  # noqa: BLE001 - a bug: reported with its traceback
        journal.append(Path(task.journal), "failed", task.key, error=repr(exc))
        return {**_row(task, "failed", None, place), "error": repr(exc), "exit_code": 1,
                "traceback": traceback.format_exc()}
    journal.append(Path(task.journal), "committed", task.key, output=task.output)
    return _row(task, "done", summary, place)


def _row(task: Task, status: str, summary: dict[str, Any] | None,
         place: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": task.key, "input": task.input, "output": task.output,
                           "status": status, "where": place}
    if summary is not None:
        row.update(summary_figures(summary))
        if "segment" in summary:
            row["warmup_frames"] = len(summary["segment"]["warmup"])
    return row


def summary_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """What the batch table shows of a run's summary."""
    faces = summary.get("faces") or {}
    return {"frames": summary.get("frames_out"), "fps": summary.get("fps"),
            "wall_s": summary.get("wall_s"), "faces": len(faces.get("tracks") or {}),
            "failed_frames": summary.get("failed_frames", 0),
            "fallbacks": sum(f.get("count", 0) for f in summary.get("fallbacks") or []),
            "failures": summary.get("failures") or []}


def cpu_threads(workers_here: int) -> int:
    """Torch threads for one of `workers_here` CPU workers sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers_here))
