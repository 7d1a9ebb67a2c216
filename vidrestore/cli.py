"""Command line: parsing and reporting only. The one place that prints and exits."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_shared import (  # noqa: F401 - _model_flags: also imported from here by tests
    _encode_options,
    _load,
    _model_flags,
    _model_options,
    _Progress,
    _run,
    _scale_option,
    _setup_logging,
    _verbosity_options,
    restore_config,
)
from .config import SCALES
from .errors import VidrestoreError

log = logging.getLogger("vidrestore")


class _SafeStderr:
    """stderr that cannot fail: closed (`2>&-`) or full (`2>/dev/full`), what cannot be
    written is dropped, so the exit code never depends on whether stderr can be written."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            written = self._stream.write(text)
            self._stream.flush()
            return written
        except (OSError, ValueError, AttributeError):
            self._give_up()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError, AttributeError):
            self._give_up()

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def _give_up(self) -> None:
        broken, self._stream = self._stream, open(os.devnull, "w")  # noqa: SIM115
        try:  # drop what it still buffers, so closing it at exit does not fail again
            broken.buffer.raw.close()
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _guard_stderr() -> None:
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:  # closed: park /dev/null there, or the next file opened (the
            null = os.open(os.devnull, mode)  # output!) would get it and FFmpeg's log lines
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if not isinstance(sys.stderr, _SafeStderr):
        sys.stderr = _SafeStderr(sys.stderr if sys.stderr is not None
                                 else open(os.devnull, "w"))  # noqa: SIM115


class _RestoreByDefault(click.Group):
    """`vidrestore IN OUT` means `vidrestore restore IN OUT`; subcommands keep their names."""

    def main(self, *args, **kwargs):
        _guard_stderr()
        return super().main(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((a for a in args if not a.startswith("-")), None)
        wants_help = any(a in ("--help", "-h") for a in args) and first is None
        if args and not wants_help and first not in self.commands and args[0] != "--version":
            self._refuse_mistyped_command(ctx, first)
            args = ["restore", *args]
        return super().parse_args(ctx, args)

    def _refuse_mistyped_command(self, ctx: click.Context, word: str | None) -> None:
        """`vidrestore model list` is a mistyped command, not a file named `model`: a word
        with no extension, no such path, and close to a command's name."""
        import difflib

        if not word or Path(word).suffix or Path(word).exists():
            return
        close = difflib.get_close_matches(word, list(self.commands), n=1, cutoff=0.6)
        if close:
            click.echo(f"vidrestore: error: no command {word!r}; did you mean "
                       f"'vidrestore {close[0]}'? (to restore a file, give IN OUT)", err=True)
            ctx.exit(2)

    def invoke(self, ctx: click.Context):
        """Every subcommand's `VidrestoreError` becomes one line and its exit code."""
        try:
            return super().invoke(ctx)
        except VidrestoreError as exc:
            click.echo(f"vidrestore: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_RestoreByDefault, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidrestore")
def main() -> None:
    """Restore faces in videos and images.

    \b
      vidrestore IN OUT [options]     restore a video or an image (same as 'restore')
      vidrestore batch IN... -o OUTDIR   many files (resumable), locally or on Ray
      vidrestore webcam [--source N]  restore a camera live, input and output side by side
      vidrestore models list          the model weights: present, bundled, missing
      vidrestore degrade IN OUT       a reproducible degradation, for testing
      vidrestore eval --reference GT --restored OUT   quality, identity and flicker
      vidrestore report LOG.jsonl     plots and comparison grids from a run's log
      vidrestore faces extract IN... -o DATASET   aligned faces for training
      vidrestore train --data DATASET --out RUN   train a face restorer
      vidrestore serve [--port 8000]  a web page and a JSON API over a job queue
    """


def _add_subcommands() -> None:
    from .cli_batch import batch_command
    from .cli_degrade import degrade_command
    from .cli_eval import eval_command
    from .cli_models import models_group
    from .cli_report import report_command
    from .cli_serve import serve_command
    from .cli_train import faces_group, train_group

    main.add_command(models_group)
    main.add_command(batch_command)
    main.add_command(degrade_command)
    main.add_command(eval_command)
    main.add_command(report_command)
    main.add_command(faces_group)
    main.add_command(train_group)
    main.add_command(serve_command)


@main.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@_scale_option
@_model_options
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Per-frame JSON Lines log (default: OUT.jsonl).")
@_encode_options
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@_verbosity_options
def restore(input_path: Path, output_path: Path, log_path, overwrite: bool, quiet: bool,
            verbose: bool, debug: bool, **model_flags) -> None:
    """Restore the faces in IN (video or image) and write OUT."""
    _setup_logging(quiet, verbose, debug)

    def job() -> dict[str, Any]:
        from .memory import settle_process

        settle_process()  # before torch is imported
        from .run import restore as run_restore  # heavy imports only when needed

        cfg = restore_config(model_flags)
        with _Progress(enabled=not quiet) as bar:
            return run_restore(input_path, output_path, cfg, log_path=log_path,
                               overwrite=overwrite, progress=bar.update)

    summary = _run(job, debug)
    if not quiet:
        failed = summary["failed_frames"]
        frames = summary["frames_out"]
        click.echo(f"wrote {output_path}: {frames} frame{'s' if frames != 1 else ''} "
                   f"({summary['fps']} fps), log {log_path or str(output_path) + '.jsonl'}"
                   + (f"; {failed} frames written unprocessed" if failed else ""), err=True)


@main.command()
@click.option("--source", default="0", show_default=True, metavar="0|/dev/videoN|FILE",
              help="Camera index, V4L2 device, or a video file played in real time.")
@click.option("--no-window", is_flag=True,
              help="Run headless (no display needed): record and log only.")
@click.option("--record", "record_path", type=click.Path(path_type=Path), metavar="OUT",
              help="Write what is shown (input | restored, with the status bar) to this video, "
                   "timed as it was shown.")
@click.option("--max-frames", type=click.IntRange(min=1), metavar="N",
              help="Stop after N frames have been shown.")
@click.option("--scale", type=click.Choice([str(s) for s in SCALES]),
              help="Output size / input size (live preset: 1).")
@_model_options
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Per-frame JSON Lines log (default: OUT.jsonl with --record, else none).")
@click.option("--snapshot-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True,
              help="Where the s key saves PNG snapshots of the window.")
@click.option("--restore/--no-restore", "restoring", default=True,
              help="Start with restoration on or off (space toggles it).")
@click.option("--overwrite", is_flag=True, help="Replace OUT and the log if they exist.")
@_verbosity_options
def webcam(source: str, no_window: bool, record_path: Path | None, max_frames: int | None,
           scale, log_path: Path | None, snapshot_dir: Path, restoring: bool, overwrite: bool,
           quiet: bool, verbose: bool, debug: bool, **model_flags) -> None:
    """Restore a camera (or a video file, in real time) live, input and output side by side.

    \b
    Keys in the window: q (or Esc) quits, space turns restoration on and off, s saves a
    snapshot PNG. Without --config the live preset (configs/live.yaml) is used.
    """
    _setup_logging(quiet, verbose, debug)

    def job() -> dict[str, Any]:
        from .memory import settle_process

        settle_process()  # before torch is imported
        from .io import preview  # noqa: F401 - cv2 before PyAV, or the window hangs
        from .live import LiveOutputs, run_live

        flags = _model_flags(model_flags)
        flags["scale"] = int(scale) if scale else None
        cfg = _load(model_flags.get("config") or "live", flags)
        log_file = log_path or (record_path.with_name(record_path.name + ".jsonl")
                                if record_path else None)
        outputs = LiveOutputs(record=record_path, log=log_file, snapshot_dir=snapshot_dir,
                              overwrite=overwrite)
        return run_live(source, cfg, window=not no_window, outputs=outputs,
                        max_frames=max_frames, restoring=restoring)

    summary = _run(job, debug)
    if not quiet:
        latency = summary["latency_ms"] or {}
        click.echo(f"webcam: {summary['frames_shown']} frames shown ({summary['fps']} fps), "
                   f"{summary['frames_dropped']} dropped, latency median "
                   f"{latency.get('median')} ms, p95 {latency.get('p95')} ms; stopped: "
                   f"{summary['stopped']}"
                   + (f"; recorded {record_path}" if record_path else ""), err=True)


_add_subcommands()
