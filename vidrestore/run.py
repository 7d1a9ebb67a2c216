"""`restore()`: one input to one output, atomically, with a log and a summary."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__
from .compose import build_stages
from .config import RunConfig
from .destination import (
    check_destination,
    check_distinct,
    commit,
    name_max,
    partial_path,
    remove_stale_partials,
)
from .device import resolve_device
from .errors import EncodeError, OutputError, VidrestoreError
from .failures import FailureLimit, FailureLog
from .frame_range import FrameRange
from .io.plan import plan_output
from .io.probe import probe
from .metrics.summary import FaceSummary
from .models import ModelStore
from .pipeline import Pipeline, Progress
from .runlog import RunLog

log = logging.getLogger(__name__)


def default_log_path(output: Path) -> Path:
    return output.with_name(output.name + ".jsonl")


def restore(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
            cfg: RunConfig, *, log_path: str | os.PathLike[str] | None = None,
            overwrite: bool = False, progress: Progress | None = None,
            store: ModelStore | None = None,
            cancel: threading.Event | None = None,
            frame_range: FrameRange | None = None) -> dict[str, Any]:
    """Restore `input_path` into `output_path`; return the run's summary.

    OUT and its log appear only when the whole run has succeeded: both are written to
    partial files beside them and renamed at the end; any failure removes the partials.
    `store` finds the model files (default: the store `cfg.models` describes). Setting
    `cancel` stops the run at the next frame with `Cancelled`, removing the partials.
    `frame_range` restores one segment of a video: its frames only, video only (the join
    copies the audio and subtitles once), its warm-up frames processed but not written; the
    summary's `segment` holds the range and the warm-up frames' faces.
    """
    started = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    info = probe(src)
    check_destination(src, dst, overwrite)
    plan = plan_output(info, dst, cfg.scale, cfg.encode)
    if frame_range is not None:
        plan = replace(plan, sides=())
    log_final = Path(log_path) if log_path else default_log_path(dst)
    if not log_path and len(log_final.name.encode()) > name_max(dst.parent):
        raise OutputError(f"{dst}: the log's name {dst.name}.jsonl would be longer than the "
                          "file system allows; give the log a path with --log")
    check_distinct(dst, log_final)
    check_destination(src, log_final, overwrite)
    device = resolve_device(cfg.device)
    limit = FailureLimit.parse(cfg.max_failed_frames, still_image=info.kind == "image")
    failures = FailureLog()
    built = build_stages(cfg, device, store or ModelStore(cfg.models), failures)
    for warning in plan.warnings + built.warnings:
        log.warning("%s", warning)

    for folder in {dst.parent, log_final.parent}:
        remove_stale_partials(folder)
    partial, log_partial = partial_path(dst), partial_path(log_final)
    faces = FaceSummary()
    runlog = RunLog(log_partial, observers=[faces.add], line_buffered=True, name=log_final)
    try:
        pipeline = Pipeline(info, plan, built.stages, device, batch_size=cfg.batch_size,
                            queue_frames=cfg.queue_frames, encode_config=cfg.encode,
                            hwdecode=cfg.decode.hwaccel, progress=progress,
                            failures=failures, failure_limit=limit, cancel=cancel,
                            frame_range=frame_range)
        stats = pipeline.run(partial, runlog)
        wall_s = time.perf_counter() - started
        summary = {
            "version": __version__, "input": str(src), "output": str(dst),
            "frames_in": stats.frames_in, "frames_out": stats.frames_out,
            "frames_declared": _declared_frames(info),
            "failed_frames": stats.failed_frames,
            "max_failed_frames": limit.describe(), **failures.summary(),
            "wall_s": round(wall_s, 3),
            "fps": round(stats.frames_out / wall_s, 3) if wall_s else None,
            "device": str(device), "scale": cfg.scale, "batch_size": pipeline.batch_size,
            "size_in": [info.width, info.height], "size_out": [plan.width, plan.height],
            "codec": plan.codec or plan.image_format, "pix_fmt": plan.pix_fmt or None,
            "decoder": stats.decoder,
            "models": built.models,
            "mean_ms_per_frame": {k: round(v / max(stats.frames_out, 1), 3)
                                  for k, v in stats.stage_ms.items()},
            "faces": faces.as_dict(),
            "warnings": plan.warnings + built.warnings + stats.warnings,
        }
        if frame_range is not None:
            summary["segment"] = {**frame_range.as_dict(),
                                  "warmup": [_faces_only(r) for r in pipeline.warmup_records]}
        runlog.summary(summary)
        runlog.close()
        _commit(partial, dst, log_partial, log_final, overwrite)
        for line in failures.console_lines():  # one line per cause, not one per frame
            log.warning("%s", line)
        return summary
    except BaseException:
        try:
            runlog.close()
        except VidrestoreError:
            pass  # the first error is the one to report
        for leftover in (partial, log_partial):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                log.warning("cannot remove %s", leftover)
        raise


def _faces_only(record: dict[str, Any]) -> dict[str, Any]:
    return {"frame": record["frame"], "pts": record.get("pts"),
            "faces": [{"track": f["track"], "box": f["box"]} for f in record.get("faces", [])]}


def _declared_frames(info) -> int | None:
    """How many frames the container says the video has (its index, or its declared end
    at the stream's rate); None when it does not say."""
    if info.frame_count:
        return info.frame_count
    if info.end_s and info.rate:
        return round(info.end_s * info.rate)
    return None if info.kind == "video" else 1


def _commit(partial: Path, dst: Path, log_partial: Path, log_final: Path,
            overwrite: bool) -> None:
    """Both finished files into place, OUT first; a log that cannot follow takes OUT back."""
    try:
        commit(partial, dst, overwrite)
    except OSError as exc:
        raise EncodeError(f"{dst}: cannot move the finished output into place "
                          f"({exc.strerror or exc})") from exc
    try:
        commit(log_partial, log_final, overwrite)
    except (OSError, VidrestoreError) as exc:
        dst.unlink(missing_ok=True)
        if isinstance(exc, VidrestoreError):
            raise
        raise EncodeError(f"{log_final}: cannot move the finished log into place "
                          f"({exc.strerror or exc})") from exc
