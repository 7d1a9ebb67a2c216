"""Encoding: processed frames back into a container with the input's timing and audio.

Runs in the encoder thread, which owns its output container. Frames keep their source
pts and time base; side packets (audio, subtitles) are muxed as they are, interleaved by
time with the video, or re-encoded when the container does not take their codec.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from ..config import EncodeConfig
from ..errors import ConfigError, EncodeError
from ..frames import Frame
from .decode import SidePacket
from .plan import ALPHA_FORMATS, OutputPlan
from .probe import MediaInfo, local_url

log = logging.getLogger(__name__)

_AUDIO_LEAD_S = 1.0  # mux side packets up to this far ahead of the video


class VideoWriter:
    """Writes upright RGB frames to `path` as the plan says; `close()` finishes the file."""

    def __init__(self, path: Path, plan: OutputPlan, info: MediaInfo, enc: EncodeConfig):
        self.path, self.plan, self.info = path, plan, info
        try:
            self.container = av.open(local_url(path), "w", format=plan.muxer)
        except av.FFmpegError as exc:
            raise EncodeError(f"{plan.path}: cannot create output ({exc})") from exc
        self.video = self._add_video_stream(enc)
        self._side_streams: dict[int, av.stream.Stream] = {}
        self._resamplers: dict[int, tuple[av.AudioResampler, av.AudioFifo]] = {}
        for side in plan.sides:
            self._add_side_stream(side)
        self._pending: deque[SidePacket] = deque()
        self._last_pts: int | None = None

    def _add_video_stream(self, enc: EncodeConfig) -> av.video.stream.VideoStream:
        info, plan = self.info, self.plan
        stream = self.container.add_stream(plan.codec, rate=info.rate or Fraction(25))
        stream.width, stream.height = _stored_size(plan.width, plan.height, info.rotation)
        stream.pix_fmt = plan.pix_fmt
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        for key, value in info.color.items():
            if value:  # 0/2 mean unspecified; leave FFmpeg's defaults
                setattr(ctx, key, value)
        stream.options = _codec_options(plan.codec, enc)
        _set_threads(ctx, plan.codec, enc.threads)
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        return stream

    def _add_side_stream(self, side) -> None:
        src = side.stream
        if side.action == "drop":
            return
        with av.open(local_url(self.info.path), metadata_errors="replace") as source:
            template = source.streams[src.index]
            if side.action == "copy":
                out = self.container.add_stream_from_template(template)
            else:
                ctx = template.codec_context
                rate = ctx.sample_rate if side.codec != "libopus" else 48000
                out = self.container.add_stream(side.codec, rate=rate)
                out.layout = ctx.layout.name if ctx.layout.nb_channels <= 2 else "stereo"
                fmt = out.codec_context.codec.audio_formats[0].name
                resampler = av.AudioResampler(format=fmt, layout=out.layout, rate=rate)
                self._resamplers[src.index] = (resampler, av.AudioFifo())
            if template.language:
                out.metadata["language"] = template.language
        self._side_streams[src.index] = out

    def write(self, image: np.ndarray, frame: Frame) -> None:
        """Encode one upright uint8 RGB image at `frame`'s timestamp."""
        stored = image
        if self.info.rotation:
            stored = np.ascontiguousarray(np.rot90(image, k=-(self.info.rotation // 90)))
        vf = av.VideoFrame.from_ndarray(stored, format="rgb24")
        ctx = self.video.codec_context
        vf = vf.reformat(format=self.plan.pix_fmt, dst_colorspace=ctx.colorspace or None,
                         dst_color_range=ctx.color_range or None)
        vf.pts, vf.time_base = frame.pts, frame.time_base
        try:
            self._mux_side_until(frame.time + _AUDIO_LEAD_S)
            for packet in self.video.encode(vf):
                self.container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise EncodeError(f"{self.plan.path}: encoding frame {frame.index} failed "
                              f"({_why(exc)})") from exc
        self._last_pts = frame.pts

    def add_side(self, side: SidePacket) -> None:
        self._pending.append(side)

    def _mux_side_until(self, t: float) -> None:
        while self._pending and self._pending[0].time <= t:
            self._mux_side(self._pending.popleft())

    def _mux_side(self, side: SidePacket) -> None:
        out = self._side_streams.get(side.stream_index)
        if out is None:
            return
        if isinstance(side.item, av.Packet):
            side.item.stream = out
            self.container.mux(side.item)
            return
        resampler, fifo = self._resamplers[side.stream_index]
        side.item.pts = None  # the fifo keeps a continuous sample count
        for chunk in resampler.resample(side.item):
            fifo.write(chunk)
        self._drain_fifo(out, fifo, final=False)

    def _drain_fifo(self, out, fifo: av.AudioFifo, final: bool) -> None:
        size = out.codec_context.frame_size or 1024
        while fifo.samples >= size or (final and fifo.samples):
            chunk = fifo.read(min(size, fifo.samples))
            for packet in out.encode(chunk):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush every encoder and finish the container."""
        try:
            for packet in self.video.encode():
                self.container.mux(packet)
            self._mux_side_until(float("inf"))
            for index, (resampler, fifo) in self._resamplers.items():
                out = self._side_streams[index]
                for chunk in resampler.resample(None):
                    fifo.write(chunk)
                self._drain_fifo(out, fifo, final=True)
                for packet in out.encode():
                    self.container.mux(packet)
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise EncodeError(f"{self.plan.path}: finishing the output failed "
                              f"({_why(exc)})") from exc

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the partial file is deleted next anyway
            log.debug("closing an aborted output failed", exc_info=True)


def _why(exc: BaseException) -> str:
    """FFmpeg's or the OS's reason, without the file name it repeats."""
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return text.splitlines()[0].split(": '")[0].strip()


class ImageWriter:
    """Writes the single frame of a still image, alpha included where the format keeps it."""

    def __init__(self, path: Path, plan: OutputPlan):
        self.path, self.plan = path, plan
        self.written = False

    def write(self, image: np.ndarray, frame: Frame) -> None:
        pil = Image.fromarray(image, "RGB")
        if frame.alpha is not None and self.plan.image_format in ALPHA_FORMATS:
            h, w = image.shape[:2]
            alpha = cv2.resize(frame.alpha, (w, h), interpolation=cv2.INTER_LINEAR)
            pil.putalpha(Image.fromarray(alpha, "L"))
        options = {"quality": 95} if self.plan.image_format in ("JPEG", "WEBP") else {}
        try:
            pil.save(self.path, format=self.plan.image_format, **options)
        except OSError as exc:
            raise EncodeError(f"{self.plan.path}: cannot write image ({exc})") from exc
        self.written = True

    def add_side(self, side: SidePacket) -> None:  # images have no side streams
        pass

    def close(self) -> None:
        if not self.written:
            raise EncodeError(f"{self.plan.path}: no frame was written")

    def abort(self) -> None:
        pass


def open_writer(path: Path, plan: OutputPlan, info: MediaInfo, enc: EncodeConfig):
    if plan.kind == "image":
        return ImageWriter(path, plan)
    return VideoWriter(path, plan, info, enc)


def _stored_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation in (90, 270) else (width, height)


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
    options = _codec_options(codec, enc)
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


def _set_threads(ctx, codec: str, threads: int) -> None:
    """Frame threads for the x264/x265 encoders, which are the CPU's work on a GPU machine
    without NVENC (an H100 has none). PyAV's default thread type for an encoder is SLICE,
    which x264 reads as sliced threads: lower latency, lower throughput and slightly worse
    compression. `threads` 0 lets the encoder choose (x264: 1.5 per core)."""
    ctx.thread_count = threads
    if codec in ("libx264", "libx265"):
        ctx.thread_type = "FRAME"


def _codec_options(codec: str, enc: EncodeConfig) -> dict[str, str]:
    if codec == "libx264":
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
