"""Video encoders: the options each takes (--crf, --preset), its threads, and the check
made before any frame that the chosen one exists, fits the container and opens."""

from __future__ import annotations

import contextlib
import io
import os
from fractions import Fraction

import av

from ..config import EncodeConfig
from ..errors import ConfigError

_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                 "slower", "veryslow", "placebo")
_TRY_CODECS = "try libx264, libx265, libvpx-vp9 or libsvtav1"


def check_encoder(codec: str, muxer: str, suffix: str, pix_fmt: str, enc: EncodeConfig) -> str:
    """Refuse, as a `ConfigError` (exit 2), a video encoder that does not exist, is not a
    video encoder, cannot go into the container, or will not open with these options;
    return the pixel format to encode in (`pix_fmt`, or the full-range twin a JPEG-style
    encoder needs). Opening a small trial encoder is what catches a bad preset."""
    try:
        found = av.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise ConfigError(f"encode.codec: {codec!r} is not an encoder in this PyAV build "
                          f"(a decoder-only or unknown name); {_TRY_CODECS}") from None
    if found.type != "video":
        raise ConfigError(f"encode.codec: {codec!r} is an {found.type} encoder; --codec takes "
                          f"a video encoder: {_TRY_CODECS}")
    with av.open(io.BytesIO(), "w", format=muxer) as probe_container:
        fits = found.canonical_name in probe_container.supported_codecs
    if not fits:
        raise ConfigError(f"encode.codec: {codec!r} ({found.canonical_name}) cannot be "
                          f"written to {suffix}; {_TRY_CODECS}")
    options = codec_options(codec, enc)
    candidates = [pix_fmt]
    if pix_fmt.startswith("yuv") and not pix_fmt.startswith("yuvj"):
        candidates.append("yuvj" + pix_fmt[3:])  # mjpeg takes full-range YUV only
    candidates += [f.name for f in (found.video_formats or ())[:1]]
    for fmt in candidates:
        if _opens(codec, fmt, options):
            return fmt
    if "preset" in options and _opens(codec, pix_fmt, {k: v for k, v in options.items()
                                                      if k != "preset"}):
        raise ConfigError(f"encode.preset: {enc.preset!r} is not a preset {codec} takes; "
                          f"one of {', '.join(_X264_PRESETS)}")
    raise ConfigError(f"encode.codec: {codec!r} cannot be opened for {pix_fmt} video with "
                      f"options {options}; {_TRY_CODECS}")


def _opens(codec: str, pix_fmt: str, options: dict[str, str]) -> bool:
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height = 256, 256
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25)
    try:
        ctx.pix_fmt = pix_fmt
        ctx.options = dict(options)
        with _stderr_silenced():  # x264 prints its own "invalid preset" line
            ctx.open()
    except (av.FFmpegError, ValueError, TypeError):
        return False
    return True


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 sent to /dev/null for a moment (libraries that print directly)."""
    try:
        saved = os.dup(2)
    except OSError:  # stderr is closed: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def set_threads(ctx, codec: str, threads: int) -> None:
    """Frame threads for the x264/x265 encoders, which are the CPU's work on a GPU machine
    without NVENC (an H100 has none). PyAV's default thread type for an encoder is SLICE,
    which x264 reads as sliced threads: lower latency, lower throughput and slightly worse
    compression. `threads` 0 lets the encoder choose (x264: 1.5 per core)."""
    ctx.thread_count = threads
    if codec in _X26X:
        ctx.thread_type = "FRAME"


_X26X = ("libx264", "libx264rgb", "libx265")  # frame threads; --crf and --preset


def codec_options(codec: str, enc: EncodeConfig) -> dict[str, str]:
    if codec in ("libx264", "libx264rgb"):
        return {"crf": str(enc.crf), "preset": enc.preset}
    if codec == "libx265":  # x265 prints ~25 info lines on stderr unless told not to
        return {"crf": str(enc.crf), "preset": enc.preset, "x265-params": "log-level=error"}
    if codec == "libvpx-vp9":
        return {"crf": str(enc.crf), "b": "0", "row-mt": "1",
                "deadline": "realtime" if enc.preset in ("ultrafast", "superfast", "veryfast")
                else "good"}
    if codec == "libsvtav1":
        return {"crf": str(enc.crf)}
    return {}
