"""`run_batch`: many files, and long files cut into segments, restored with one config.

    plan files -> skip the finished -> models fetched once -> tasks (a file, or its
    segments) on local worker processes or Ray -> segments joined -> batch summary

The batch is resumable: everything finished is skipped on the next run (a file by its
output and log, a segment the same way in the file's hidden segment folder), and nothing
half-written is ever taken for finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import VidrestoreError
from . import journal
from .finished import finished_summary
from .inputs import FileJob, plan_files
from .segments import plan_segments, segment_count, segment_folder, segment_path
from .tasks import Task, summary_figures

log = logging.getLogger(__name__)

SUMMARY_NAME = "batch-summary.json"
BatchProgress = Callable[[int, int], None]  # (frames written, frames to write)


@dataclass(frozen=True)
class BatchOptions:
    jobs: int | None = None  # workers at once; None: one per device (local), all that fit (Ray)
    ray: str | None = None  # None: this machine; "auto" or a cluster address
    segments: int | str = 1  # per video: N or "auto"
    warmup_frames: int = 16
    cpus_per_task: float = 1  # on Ray without GPUs


def run_batch(items: Sequence[str], outdir: Path, config: RunConfig, options: BatchOptions,
              progress: BatchProgress | None = None) -> dict[str, Any]:
    """Restore every file `items` names into `outdir`; return the batch summary (also
    written to OUTDIR/batch-summary.json). Failed files are rows with `status` "failed"."""
    started = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    files = plan_files(items, outdir)
    journal_file = journal.journal_path(outdir)
    rows: dict[str, dict[str, Any]] = {}
    tasks: list[Task] = []
    segmented: dict[str, tuple[FileJob, list[Task]]] = {}
    workers = _worker_count(config, options)
    worker_config = None
    for job in files:
        done = finished_summary(job.output, job.log)
        if done is not None:
            rows[job.key] = _file_row(job, "skipped", summary_figures(done),
                                      where=_where_of(done))
            # segments of a run cut between its join's commit and their removal
            shutil.rmtree(segment_folder(job.output), ignore_errors=True)
            continue
        job.output.parent.mkdir(parents=True, exist_ok=True)
        if worker_config is None:
            worker_config = _prepare(config)
        try:
            file_tasks = _tasks_for(job, worker_config, options, workers, journal_file)
        except VidrestoreError as exc:
            rows[job.key] = _file_row(job, "failed", {}, error=str(exc),
                                      exit_code=exc.exit_code)
            continue
        tasks += file_tasks
        if file_tasks[0].frame_range is not None:
            segmented[job.key] = (job, file_tasks)
    totals = {task.key: task.frames for task in tasks}
    written: dict[str, int] = {}

    def on_progress(key: str, frames: int) -> None:
        written[key] = frames
        if progress is not None:
            progress(sum(written.values()), sum(totals.values()))

    segment_rows: dict[str, dict[str, Any]] = {}
    file_of = {t.key: key for key, (_, file_tasks) in segmented.items() for t in file_tasks}

    def on_result(task: Task, row: dict[str, Any]) -> None:
        if row["status"] != "failed":
            on_progress(task.key, row.get("frames") or task.frames)
        if task.frame_range is None:
            rows[task.key] = row
            return
        segment_rows[task.key] = row
        job, file_tasks = segmented[file_of[task.key]]
        if all(t.key in segment_rows for t in file_tasks):  # its last segment: join now
            rows[job.key] = _join(job, file_tasks, [segment_rows[t.key] for t in file_tasks],
                                  worker_config or config, journal_file)

    if tasks:
        _execute(tasks, config, options, on_result, on_progress)
    summary = _batch_summary([rows[job.key] for job in files], time.perf_counter() - started,
                             options)
    _write_json(outdir / SUMMARY_NAME, summary)
    return summary


def _worker_count(config: RunConfig, options: BatchOptions) -> int:
    if options.jobs:
        return options.jobs
    if options.ray is None:
        from .local import local_slots

        return len(local_slots(config.device, None))
    return 0  # Ray: decided when connected (see segment_count's use)


def _prepare(config: RunConfig) -> RunConfig:
    from .models import prepare_models

    return prepare_models(config)


def _tasks_for(job: FileJob, config: RunConfig, options: BatchOptions, workers: int,
               journal_file: Path) -> list[Task]:
    from ..io.probe import probe

    info = probe(job.input)
    frames = info.frame_count or 0
    count = 1
    if info.kind == "video" and options.segments != 1:
        if options.ray is not None and not workers:
            workers = _ray_workers(options)
        count = segment_count(options.segments, frames, workers)
        if count > 1 and "avi" in (info.container, job.output.suffix.lower().lstrip(".")):
            # AVI keeps frame slots, not timestamps (FFmpeg's reader shifts them by the
            # decoder's delay): a cut would not land where a whole run's frames do
            log.warning("%s: AVI is restored whole; --segments needs timestamps", job.input)
            count = 1
    whole = Task(job.key, str(job.input), str(job.output), str(job.log), config,
                 str(journal_file), frames)
    if count <= 1:
        return [whole]
    ranges = plan_segments(info, count, options.warmup_frames)
    if len(ranges) == 1:
        return [whole]
    segment_folder(job.output).mkdir(exist_ok=True)
    tasks = []
    for n, frame_range in enumerate(ranges):
        path = segment_path(job.output, n)
        tasks.append(Task(f"{job.key}#{n}", str(job.input), str(path),
                          str(path.with_name(path.name + ".jsonl")), config,
                          str(journal_file), 0, frame_range))
    return _with_frames(tasks, frames)


def _with_frames(tasks: list[Task], frames: int) -> list[Task]:
    """Each segment's share of the frames (written ones, warm-up aside), for the bar."""
    from dataclasses import replace

    firsts = [t.frame_range.start_index for t in tasks]
    return [replace(t, frames=max(0, (firsts[n + 1] if n + 1 < len(tasks) else frames)
                                   - firsts[n])) for n, t in enumerate(tasks)]


def _ray_workers(options: BatchOptions) -> int:
    from .ray_cluster import connect

    ray = connect(options.ray)
    resources = ray.cluster_resources()
    return int(resources.get("GPU", 0)) or max(1, int(resources.get("CPU", 1)
                                                      // options.cpus_per_task))


def _execute(tasks: list[Task], config: RunConfig, options: BatchOptions, on_result,
             on_progress) -> None:
    if options.ray is not None:
        from .ray_cluster import run_ray

        run_ray(tasks, options.ray, on_result, on_progress, jobs=options.jobs,
                cpus_per_task=options.cpus_per_task)
        return
    from .local import local_slots, run_local

    run_local(tasks, local_slots(config.device, options.jobs), on_result, on_progress)


def _join(job: FileJob, tasks: list[Task], rows: list[dict[str, Any]], config: RunConfig,
          journal_file: Path) -> dict[str, Any]:
    """The file's row once all its segments are back: joined (on the driver, as soon as
    its last segment is done), or failed with the first failed segment's error."""
    from .join import join_file

    where = [row["where"] for row in rows]
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        return _file_row(job, "failed", {}, where=where, error=f"segment {failed[0]['key']}: "
                         f"{failed[0]['error']}", exit_code=failed[0].get("exit_code", 1))
    try:
        summary = join_file(job.input, job.output, job.log, config,
                            [Path(t.output) for t in tasks])
    except VidrestoreError as exc:
        return _file_row(job, "failed", {}, where=where, error=str(exc),
                         exit_code=exc.exit_code)
    journal.append(journal_file, "committed", job.key, output=str(job.output),
                   segments=len(tasks))
    return _file_row(job, "done", summary_figures(summary), where=where,
                     segments=len(tasks), join_s=summary["join_s"],
                     warmup_frames=sum(s["warmup_frames"] for s in summary["segments"]))


def _file_row(job: FileJob, status: str, figures: dict[str, Any], **more: Any
              ) -> dict[str, Any]:
    return {"key": job.key, "input": str(job.input), "output": str(job.output),
            "status": status, **figures, **more}


def _where_of(summary: dict[str, Any]) -> dict[str, Any]:
    return {"device": summary.get("device")}


def _batch_summary(rows: list[dict[str, Any]], wall_s: float,
                   options: BatchOptions) -> dict[str, Any]:
    count = {status: sum(1 for r in rows if r["status"] == status)
             for status in ("done", "skipped", "failed")}
    frames = sum(r.get("frames") or 0 for r in rows if r["status"] == "done")
    return {"files": len(rows), **count, "frames_written": frames,
            "wall_s": round(wall_s, 3), "fps": round(frames / wall_s, 3) if wall_s else None,
            "executor": f"ray {options.ray}" if options.ray is not None else "local",
            "segments": options.segments, "rows": rows}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a summary."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, path)
