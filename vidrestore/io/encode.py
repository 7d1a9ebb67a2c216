"""Encoding: processed frames back into a container with the input's timing and audio.

Runs in the encoder thread, which owns its output container. Frames keep their source
pts and time base; side packets (audio, subtitles) are muxed as they are, interleaved by
time with the video, or re-encoded when the container does not take their codec.
"""

from __future__ import annotations

import logging
from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.subtitles.subtitle import SubtitleSet
from PIL import Image

from ..config import EncodeConfig
from ..errors import EncodeError
from ..frames import Frame
from .decode import SidePacket
from .encoders import codec_options, set_threads
from .plan import ALPHA_FORMATS, OutputPlan
from .probe import MediaInfo, local_url

log = logging.getLogger(__name__)

AUDIO_LEAD_S = 1.0  # mux side packets up to this far ahead of the video
# FFmpeg's default ASS header, for a subtitle encoder whose source decoder gave none.
_ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    b"BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
    b"BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0"
    b"\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, "
    b"Effect, Text\n")


class VideoWriter:
    """Writes upright RGB frames to `path` as the plan says; `close()` finishes the file."""

    def __init__(self, path: Path, plan: OutputPlan, info: MediaInfo, enc: EncodeConfig):
        self.path, self.plan, self.info = path, plan, info
        try:
            self.container = av.open(local_url(path), "w", format=plan.muxer,
                                     options=_muxer_options(plan.muxer))
        except av.FFmpegError as exc:
            raise EncodeError(f"{plan.path}: cannot create output ({exc})") from exc
        self._side_streams: dict[int, av.stream.Stream] = {}
        self._resamplers: dict[int, _Reencoder] = {}
        try:
            self.video = self._add_video_stream(enc)
            for side in plan.sides:
                self._add_side_stream(side)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.abort()
            raise EncodeError(f"{plan.path}: cannot set up the output ({_why(exc)})") from exc
        self._pending: deque[SidePacket] = deque()
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}  # pts -> duration of frames in the encoder
        self._warned_grid = False
        self._side_shift: dict[int, int] = {}  # AVI: output stream index -> pts added

    def _add_video_stream(self, enc: EncodeConfig) -> av.video.stream.VideoStream:
        info, plan = self.info, self.plan
        stream = self.container.add_stream(plan.codec, rate=info.rate or Fraction(25))
        stream.width, stream.height = _stored_size(plan.width, plan.height, info.rotation)
        stream.pix_fmt = plan.pix_fmt
        self.time_base = _output_time_base(plan, info)
        stream.time_base = self.time_base
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        for key, value in info.color.items():
            if value:  # 0/2 mean unspecified; leave FFmpeg's defaults
                setattr(ctx, key, value)
        stream.options = codec_options(plan.codec, enc)
        if plan.muxer == "avi":
            ctx.max_b_frames = 0  # AVI keeps no presentation times: B-frames would shuffle them
        set_threads(ctx, plan.codec, enc.threads)
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
            elif side.action == "convert":
                out = self.container.add_stream(side.codec)
                decoder = template.codec_context
                decoder.open()  # a text decoder makes its ASS header when it opens
                out.codec_context.subtitle_header = decoder.subtitle_header or _ASS_HEADER
            else:
                ctx = template.codec_context
                rate = ctx.sample_rate if side.codec != "libopus" else 48000
                out = self.container.add_stream(side.codec, rate=rate)
                # by channel count: a layout without an order ("2 channels") opens no encoder
                out.layout = "mono" if ctx.layout.nb_channels == 1 else "stereo"
                out.time_base = out.codec_context.time_base = Fraction(1, rate)
                fmt = out.codec_context.codec.audio_formats[0].name
                self._resamplers[src.index] = _Reencoder(fmt, out.layout.name, rate)
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
        pts, duration = self._on_grid(frame)
        vf.pts, vf.time_base = pts, self.time_base
        if duration:
            self._durations[pts] = duration
        try:
            self._mux_side_until(frame.time + AUDIO_LEAD_S)
            for packet in self.video.encode(vf):
                self._mux_video(packet)
        except (av.FFmpegError, OSError) as exc:
            raise EncodeError(f"{self.plan.path}: encoding frame {frame.index} failed "
                              f"({_why(exc)})") from exc
        self._last_pts = pts

    def _on_grid(self, frame: Frame) -> tuple[int, int]:
        """The frame's pts and duration in the output time base: the source's own, except in
        AVI, whose time base is one frame period (it has no timestamps, only frame slots)."""
        if self.time_base == frame.time_base:
            return frame.pts, frame.duration
        pts = round(frame.pts * frame.time_base / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            if not self._warned_grid:
                log.warning("%s: AVI holds a constant frame rate only; frames closer than "
                            "one period (%s s) are moved to the next slot", self.plan.path,
                            self.time_base)
                self._warned_grid = True
            pts = self._last_pts + 1
        duration = round(frame.duration * frame.time_base / self.time_base)
        return pts, duration

    def _mux_video(self, packet: av.Packet) -> None:
        """Each packet keeps its frame's duration: the last frame's, after a jump or in a
        VFR stream, would otherwise be guessed from the average rate."""
        duration = self._durations.pop(packet.pts, None)
        if duration:
            packet.duration = duration
        self.container.mux(packet)

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
            self._mux_audio(side.item)
            return
        if isinstance(side.item, SubtitleSet):
            self._mux_subtitle(out, side.item)
            return
        reencoder = self._resamplers[side.stream_index]
        reencoder.add(side.item, side.time)
        self._drain_fifo(out, reencoder, final=False)

    def _mux_audio(self, packet: av.Packet) -> None:
        """AVI cannot store a negative start (an encoder's priming, AAC's from an mp4); its
        muxer would shift every stream, the video off its frame slots. There only the side
        stream moves, to start at 0, as any player of such an AVI hears it anyway."""
        if self.plan.muxer == "avi" and packet.pts is not None:
            index = packet.stream.index
            if index not in self._side_shift:
                self._side_shift[index] = max(0, -packet.pts)
            shift = self._side_shift[index]
            if shift:
                packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
        self.container.mux(packet)

    def _mux_subtitle(self, out, subtitle) -> None:
        """One decoded text cue, encoded in the output's subtitle codec, at its time."""
        packet = out.codec_context.encode_subtitle(subtitle)
        start_ms = round(subtitle.pts / 1000) + subtitle.start_display_time
        packet.pts = packet.dts = start_ms
        packet.duration = max(0, subtitle.end_display_time - subtitle.start_display_time)
        packet.time_base = Fraction(1, 1000)
        packet.stream = out
        self.container.mux(packet)

    def _drain_fifo(self, out, reencoder: _Reencoder, final: bool) -> None:
        size = out.codec_context.frame_size or 1024
        for chunk in reencoder.chunks(size, final):
            for packet in out.encode(chunk):
                self._mux_audio(packet)

    def close(self) -> None:
        """Flush every encoder and finish the container."""
        try:
            self._flush_video()
            self._mux_side_until(float("inf"))
            for index, reencoder in self._resamplers.items():
                out = self._side_streams[index]
                reencoder.flush()
                self._drain_fifo(out, reencoder, final=True)
                for packet in out.encode():
                    self._mux_audio(packet)
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise EncodeError(f"{self.plan.path}: finishing the output failed "
                              f"({_why(exc)})") from exc

    def _flush_video(self) -> None:
        for packet in self.video.encode():
            self._mux_video(packet)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the partial file is deleted next anyway
            log.debug("closing an aborted output failed", exc_info=True)


def _output_time_base(plan: OutputPlan, info: MediaInfo) -> Fraction:
    """The source's time base, so every pts goes through unchanged; AVI counts frame slots,
    so there it is one frame period (a finer one would be filled with empty frames)."""
    if plan.muxer == "avi" and info.rate:
        return Fraction(1) / Fraction(info.rate)
    return info.time_base


def _muxer_options(muxer: str) -> dict[str, str]:
    """Matroska takes negative timestamps (AAC priming copied from an mp4 starts at -21 ms);
    FFmpeg's default would shift every stream, the video included, to start at 0."""
    if muxer in ("matroska", "webm"):
        return {"avoid_negative_ts": "disabled"}
    return {}


def _why(exc: BaseException) -> str:
    """FFmpeg's or the OS's reason, without the file name it repeats."""
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return text.splitlines()[0].split(": '")[0].strip()


class _Reencoder:
    """Decoded audio on its way to another codec: resampled, cut into the encoder's frame
    size, and timed where it was: the first sample keeps its time (audio that does not
    start at 0 stays where it was) and a hole in the source becomes silence, so the audio
    stays level with the video. pts count samples at the output rate (time base 1/rate)."""

    _MAX_SILENCE_S = 600.0
    _DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "flt": np.float32,
               "dbl": np.float64, "s64": np.int64}

    def __init__(self, fmt: str, layout: str, rate: int) -> None:
        self.format, self.layout, self.rate = av.AudioFormat(fmt), layout, rate
        self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        self.fifo = av.AudioFifo()
        self.written: int | None = None  # sample position after what is in the fifo
        self.read: int = 0  # sample position of the fifo's first sample

    def add(self, frame: av.AudioFrame, time_s: float) -> None:
        start = round(time_s * self.rate)
        if self.written is None:
            self.written = self.read = start
        elif start - self.written > self.rate // 100:  # a hole of more than 10 ms
            gap = start - self.written
            if gap <= self._MAX_SILENCE_S * self.rate:
                self._write(self._silence(gap))
            else:
                log.warning("audio jumps %.1f s ahead; the jump is closed up", gap / self.rate)
        frame.pts = None  # the fifo counts samples; pts are set as chunks come out
        for chunk in self.resampler.resample(frame):
            self._write(chunk)

    def flush(self) -> None:
        for chunk in self.resampler.resample(None):
            self._write(chunk)

    def chunks(self, size: int, final: bool):
        while self.fifo.samples >= size or (final and self.fifo.samples):
            chunk = self.fifo.read(min(size, self.fifo.samples))
            chunk.pts, chunk.time_base = self.read, Fraction(1, self.rate)
            self.read += chunk.samples
            yield chunk

    def _write(self, chunk: av.AudioFrame) -> None:
        chunk.pts = None
        self.fifo.write(chunk)
        self.written = (self.written or 0) + chunk.samples

    def _silence(self, samples: int) -> av.AudioFrame:
        channels = av.AudioLayout(self.layout).nb_channels
        dtype = self._DTYPES[self.format.packed.name]
        shape = (channels, samples) if self.format.is_planar else (1, samples * channels)
        frame = av.AudioFrame.from_ndarray(np.zeros(shape, dtype=dtype),
                                           format=self.format.name, layout=self.layout)
        frame.sample_rate = self.rate
        return frame


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
