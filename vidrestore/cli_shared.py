"""What the commands share: restore's options (models, encoder, verbosity), the config
they describe, the progress display, the log-line handler, and the error-to-exit-code
wrapper. `cli.py` and the subcommand modules import it; it imports none of them."""

from __future__ import annotations

import logging
import signal
import sys
import time
import traceback
from typing import Any

import click

from .config import HWDECODE, SCALES
from .errors import VidrestoreError


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
        click.option("--temporal", "temporal", type=click.FloatRange(0, 1, max_open=True),
                     metavar="W",
                     help="Steady restored faces along their motion: the most weight the "
                          "frame before gets, 0-1 (default: 0.85; 0: off, each frame "
                          "restored on its own)."),
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


def _encode_options(func):
    """`--codec`, `--crf`, `--preset`: restore's and batch's encoder choices."""
    func = click.option("--preset", help="Encoder speed preset, ultrafast ... veryslow "
                                         "(default: medium).")(func)
    func = click.option("--crf", type=click.IntRange(0, 63),
                        help="Encoder quality (default: 18).")(func)
    return click.option("--codec", help="Video encoder (default: libx264; libvpx-vp9 for "
                                        ".webm).")(func)


_scale_option = click.option("--scale", type=click.Choice([str(s) for s in SCALES]),
                             help="Output size / input size (default: 2).")


def restore_config(model_flags: dict[str, Any]):
    """The `RunConfig` restore's (and batch's) flags describe: `--config`, then the flags."""
    flags = _model_flags(model_flags)
    scale = model_flags.get("scale")
    flags["scale"] = int(scale) if scale else None
    flags["encode"] = {key: model_flags.get(key) for key in ("codec", "crf", "preset")}
    return _load(model_flags.get("config"), flags)


def _model_flags(flags: dict[str, Any]) -> dict[str, Any]:
    download = None if flags.get("no_download") is None else not flags["no_download"]
    compile_mode = "default" if flags.get("compile_models") else None
    return {
        "device": flags.get("device"),
        "batch_size": flags.get("batch_size"),
        "background": {"model": flags.get("bg_model"), "tile": flags.get("tile"),
                       "compile": compile_mode},
        "face": {"model": flags.get("face_model"), "fidelity": flags.get("fidelity"),
                 "temporal_strength": flags.get("temporal"),
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
