"""`vidrestore batch IN... -o OUTDIR`: many files with restore's options, resumable, on
this machine's worker processes or on Ray; a progress bar over all of them, then a table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .cli_shared import (
    _encode_options,
    _model_options,
    _Progress,
    _run,
    _scale_option,
    _setup_logging,
    _verbosity_options,
    restore_config,
)


def _segments(value: str | None) -> int | str:
    if value in (None, "1"):
        return 1
    if value == "auto":
        return "auto"
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise click.BadParameter(f"{value!r}: a number of segments (1 or more) or auto")
    return count


@click.command("batch")
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the outputs go (NAME, or a folder's relative path), each with its "
                   "NAME.jsonl log; also batch-summary.json and the journal.")
@click.option("--jobs", type=click.IntRange(min=1), metavar="N",
              help="Files (or segments) restored at once (default: one per device here; "
                   "with --ray, as many as the cluster's resources take).")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS",
              help="Run each job as a Ray task: auto (the cluster RAY_ADDRESS names, a "
                   "running local Ray, or a new local one) or a cluster address "
                   "(ray://head:10001). Needs pip install 'vidrestore[ray]'.")
@click.option("--segments", metavar="N|auto", callback=lambda _c, _p, v: _segments(v),
              help="Cut each video at keyframes into N segments restored on their own "
                   "workers and joined losslessly; auto: one per worker, each at least 250 "
                   "frames (default: 1, whole files).")
@click.option("--warmup-frames", type=click.IntRange(min=0), default=16, show_default=True,
              help="Frames before each segment processed (tracker, smoothing, colour "
                   "history) but not written.")
@click.option("--cpus-per-task", type=click.FloatRange(min=0.01), default=1.0,
              show_default=True, help="CPUs each Ray task asks for on a cluster without GPUs.")
@_scale_option
@_model_options
@_encode_options
@_verbosity_options
def batch_command(inputs: tuple[str, ...], outdir: Path, jobs: int | None,
                  ray_address: str | None, segments, warmup_frames: int,
                  cpus_per_task: float, quiet: bool, verbose: bool, debug: bool,
                  **model_flags) -> None:
    """Restore many files (paths, folders, globs) into OUTDIR with the same options.

    \b
    Finished outputs (OUT with a log that ends in a summary) are skipped, so a batch that
    stopped is resumed by running it again. Exit code: 0 when every file is done or
    skipped, else the first failed file's (each failure is one line on stderr).
    """
    _setup_logging(quiet, verbose, debug)

    def job() -> dict[str, Any]:
        from .memory import settle_process

        settle_process()
        from .jobs.batch_run import BatchOptions, run_batch

        cfg = restore_config(model_flags)
        options = BatchOptions(jobs=jobs, ray=ray_address, segments=segments,
                               warmup_frames=warmup_frames, cpus_per_task=cpus_per_task)
        with _Progress(enabled=not quiet) as bar:
            return run_batch(inputs, outdir, cfg, options, progress=bar.update)

    summary = _run(job, debug)
    if not quiet:
        click.echo(format_table(summary["rows"]))
        click.echo(f"{summary['done']} done, {summary['skipped']} skipped, "
                   f"{summary['failed']} failed; {summary['frames_written']} frames in "
                   f"{summary['wall_s']} s ({summary['fps']} fps); summary "
                   f"{outdir / 'batch-summary.json'}", err=True)
    failed = [row for row in summary["rows"] if row["status"] == "failed"]
    for row in failed:
        message = row["error"] if row["input"] in row["error"] else \
            f"{row['input']}: {row['error']}"
        click.echo(f"vidrestore: error: {message}", err=True)
        if debug and row.get("traceback"):
            click.echo(row["traceback"], err=True)
    if failed:
        sys.exit(failed[0].get("exit_code") or 1)


def format_table(rows: list[dict[str, Any]]) -> str:
    """One line per file: status, frames, fps, faces (people tracked), failed frames and
    fallbacks, and where it ran."""
    header = ("file", "status", "frames", "fps", "faces", "failures", "where")
    lines = [header]
    for row in rows:
        failures = row.get("failed_frames")
        if row.get("fallbacks"):
            failures = f"{failures or 0} (+{row['fallbacks']} fallbacks)"
        lines.append((Path(row["output"]).name, row["status"], _cell(row.get("frames")),
                      _cell(row.get("fps")), _cell(row.get("faces")), _cell(failures),
                      _where(row.get("where"))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _where(where: Any) -> str:
    places = where if isinstance(where, list) else [where] if where else []
    seen = []
    for place in places:
        text = place.get("host") or ""
        if place.get("pid"):
            text += f":{place['pid']}"
        device = place.get("device") or place.get("slot_device")
        if device:
            text += f" {device}"
        if place.get("ray_node"):
            text += f" ray {place['ray_node'][:8]}"
        if text and text not in seen:
            seen.append(text)
    return ", ".join(seen) or "-"


__all__ = ["batch_command", "format_table"]
