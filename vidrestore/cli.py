"""Command line: parsing and reporting only. The one place that prints and exits."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import HWDECODE, SCALES
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
      vidrestore webcam [--source N]  restore a camera live, input and output side by side
      vidrestore models list          the model weights: present, bundled, missing
      vidrestore degrade IN OUT       a reproducible degradation, for testing
      vidrestore eval --reference GT --restored OUT   quality, identity and flicker
      vidrestore report LOG.jsonl     plots and comparison grids from a run's log
      vidrestore faces extract IN... -o DATASET   aligned faces for training
      vidrestore train --data DATASET --out RUN   train a face restorer
    """


def _add_subcommands() -> None:
    from .cli_degrade import degrade_command
    from .cli_eval import eval_command
    from .cli_models import models_group
    from .cli_report import report_command
    from .cli_train import faces_group, train_group

    main.add_command(models_group)
    main.add_command(degrade_command)
    main.add_command(eval_command)
    main.add_command(report_command)
    main.add_command(faces_group)
    main.add_command(train_group)


def _model_options(func):
    options = [
        click.option("--config", "config", metavar="FILE|PRESET",
                     help="YAML preset file, or the name of one in configs/ "
                          "(default, fast, quality)."),
        click.option("--device", help="auto, cpu, cuda or cuda:N (default: auto)."),
        click.option("--batch-size", type=click.IntRange(min=1),
                     help="Frames per device batch (default: 4)."),
        click.option("--face-model", help="Face restorer: gfpgan-1.3 (default), gfpgan-1.4, "
                                          "restoreformer++, codeformer (non-commercial "
                                          "licence), a .pth file, passthrough (the whole "
                                          "face path with faces unchanged), or none."),
        click.option("--fidelity", type=click.FloatRange(0, 1), metavar="W",
                     help="Weight of the restored face against the input face, 0-1 "
                          "(default: 1, fully restored); with codeformer, its fidelity "
                          "weight w (0: most restoration, 1: closest to the input)."),
        click.option("--identity-guard", is_flag=True, default=None,
                     help="Blend faces that no longer look like their input back toward it "
                          "until they pass the identity check."),
        click.option("--identity-encoder", type=click.Choice(["auto", "arcface", "dlib"]),
                     help="Identity scoring: auto (ArcFace when its weights are in the model "
                          "cache, else dlib; the default), arcface (downloaded if need be) "
                          "or dlib (bundled)."),
        click.option("--bg-model", help="Background upscaler: realesrgan-x2plus (default), "
                                        "realesrgan-x4plus, realesr-general-x4v3, "
                                        "realesr-animevideov3, a weight file (.pth or "
                                        ".safetensors spandrel can load), or none (plain "
                                        "resize)."),
        click.option("--tile", type=click.IntRange(min=0),
                     help="Background tile size in input pixels (0: automatic)."),
        click.option("--compile", "compile_models", is_flag=True, default=None,
                     help="torch.compile the face restorer and the background model (the "
                          "first batch of each shape compiles; pays off on long videos)."),
        click.option("--hwdecode", type=click.Choice(HWDECODE),
                     help="Decode video on the GPU: auto (fall back to software), cuda, or "
                          "none (default)."),
        click.option("--models-dir", type=click.Path(file_okay=False),
                     help="Where model weights are cached (default: $VIDRESTORE_HOME or the "
                          "user cache)."),
        click.option("--no-download", is_flag=True, default=None,
                     help="Never fetch weights; use what is cached or bundled."),
        click.option("--strict-models", is_flag=True, default=None,
                     help="Fail instead of falling back when an official model is missing."),
        click.option("--white-balance", is_flag=True, default=None,
                     help="Pre-process: gray-world white balance (removes a colour cast)."),
        click.option("--denoise", is_flag=True, default=None,
                     help="Pre-process: non-local-means denoising (slow on a CPU)."),
        click.option("--clahe", is_flag=True, default=None,
                     help="Pre-process: CLAHE on the lightness (local contrast; colours kept)."),
        click.option("--max-failed-frames", metavar="N|P%",
                     help="Failed frames (written unprocessed) a run accepts before it stops "
                          "with exit 6 (default: auto = 0 for an image, 1%% of a video's "
                          "frames). The same error in 3 batches in a row always stops it."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _verbosity_options(func):
    func = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")(func)
    func = click.option("-v", "--verbose", is_flag=True, help="More log lines.")(func)
    func = click.option("-q", "--quiet", is_flag=True,
                        help="No progress bar, only errors.")(func)
    return func


@main.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--scale", type=click.Choice([str(s) for s in SCALES]),
              help="Output size / input size (default: 2).")
@_model_options
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Per-frame JSON Lines log (default: OUT.jsonl).")
@click.option("--codec", help="Video encoder (default: libx264; libvpx-vp9 for .webm).")
@click.option("--crf", type=click.IntRange(0, 63), help="Encoder quality (default: 18).")
@click.option("--preset", help="Encoder speed preset, ultrafast ... veryslow "
                                "(default: medium).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@_verbosity_options
def restore(input_path: Path, output_path: Path, scale, log_path, codec, crf, preset,
            overwrite: bool, quiet: bool, verbose: bool, debug: bool, **model_flags) -> None:
    """Restore the faces in IN (video or image) and write OUT."""
    _setup_logging(quiet, verbose, debug)

    def job() -> dict[str, Any]:
        from .memory import settle_process

        settle_process()  # before torch is imported
        from .run import restore as run_restore  # heavy imports only when needed

        flags = _model_flags(model_flags)
        flags["scale"] = int(scale) if scale else None
        flags["encode"] = {"codec": codec, "crf": crf, "preset": preset}
        cfg = _load(model_flags.get("config"), flags)
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


def _model_flags(flags: dict[str, Any]) -> dict[str, Any]:
    download = None if flags.get("no_download") is None else not flags["no_download"]
    compile_mode = "default" if flags.get("compile_models") else None
    return {
        "device": flags.get("device"),
        "batch_size": flags.get("batch_size"),
        "background": {"model": flags.get("bg_model"), "tile": flags.get("tile"),
                       "compile": compile_mode},
        "face": {"model": flags.get("face_model"), "fidelity": flags.get("fidelity"),
                 "identity_guard": flags.get("identity_guard"),
                 "identity_encoder": flags.get("identity_encoder"), "compile": compile_mode},
        "decode": {"hwaccel": flags.get("hwdecode")},
        "models": {"dir": flags.get("models_dir"), "download": download,
                   "strict": flags.get("strict_models")},
        "preprocess": {step: {"enabled": flags.get(step)}
                       for step in ("white_balance", "denoise", "clahe")},
        "max_failed_frames": flags.get("max_failed_frames"),
    }


def _load(config: str | None, flags: dict[str, Any]):
    from .api import load_config as load

    return load(config or "default", **flags)


def _run(job, debug: bool):
    """Run `job`; turn our errors into one line and an exit code, Ctrl-C into 130."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)  # a closed terminal: clean up the same way
    try:
        return job()
    except VidrestoreError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"vidrestore: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vidrestore: interrupted", err=True)
        sys.exit(130)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class _Progress:
    """A tqdm bar on stderr when it is a terminal; otherwise a plain line every
    `plain_every_s` seconds (frames, fps, ETA), so a long run can be followed in a log."""

    plain_every_s = 30.0

    def __init__(self, enabled: bool) -> None:
        self.tty = enabled and sys.stderr.isatty()
        self.plain = enabled and not self.tty
        self.bar = None
        self._started = time.monotonic()
        self._last_line = self._started

    def __enter__(self) -> _Progress:
        return self

    def update(self, done: int, total: int) -> None:
        if self.plain:
            self._plain_line(done, total)
        if not self.tty:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, unit="frame", dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)
        self.bar.update(done - self.bar.n)

    def _plain_line(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last_line < self.plain_every_s:
            return
        self._last_line = now
        fps = done / max(now - self._started, 1e-9)
        line = f"vidrestore: {done}" + (f"/{total}" if total else "") + f" frames, {fps:.3g} fps"
        if total and fps > 0 and done < total:
            line += f", ETA {_duration((total - done) / fps)}"
        click.echo(line, err=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _LineHandler(logging.Handler):
    """'vidrestore: warning: ...' lines on stderr that do not break a tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        msg = record.getMessage()
        if record.levelno < logging.WARNING:
            line = f"vidrestore: {msg}"
        else:
            line = f"vidrestore: {record.levelname.lower()}: {msg}"
        if record.exc_info and logging.getLogger("vidrestore").level <= logging.DEBUG:
            line += "\n" + self.format(record)
        tqdm.write(line, file=sys.stderr)


def _setup_logging(quiet: bool, verbose: bool, debug: bool) -> None:
    root = logging.getLogger("vidrestore")
    root.handlers[:] = [_LineHandler()]
    root.propagate = False
    if debug:
        root.setLevel(logging.DEBUG)
    elif verbose:
        root.setLevel(logging.INFO)
    elif quiet:
        root.setLevel(logging.ERROR)
    else:
        root.setLevel(logging.WARNING)


_add_subcommands()
