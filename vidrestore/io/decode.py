"""Decoding: frames in presentation order, upright, as uint8 RGB; side packets passed on.

Runs in the decoder thread, which owns its own container. A packet that fails to decode
does not cost a frame: its timestamp is filled with a copy of the previous frame, so the
output keeps the input's frame count and timing, and the frame's log record says so.

Hardware decoding (`hwaccel` "cuda" or "auto") goes through PyAV's `HWAccel`: FFmpeg decodes
on the GPU and copies each frame back to host memory, where it is converted to RGB as a
software frame would be. FFmpeg itself falls back to software for a stream its GPU decoder
cannot take; "auto" also falls back when no GPU decoder can be opened at all.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageOps

from ..errors import DeviceError, InputError
from ..frames import Frame
from .probe import MediaInfo, local_url, quiet_bomb_warning

log = logging.getLogger(__name__)


@dataclass
class SidePacket:
    """An audio/subtitle packet (copied as is) or a decoded audio frame (to re-encode)."""

    stream_index: int
    item: av.Packet | av.AudioFrame
    time: float  # seconds, for interleaving with the video


SideSink = Callable[[SidePacket], None]
DecoderSink = Callable[[str], None]  # told which decoder runs: "software" or "cuda"
WarningSink = Callable[[str], None]  # told what the run's summary should say


@dataclass(frozen=True)
class HardwareDecode:
    """kind: "none", "auto" or "cuda" (see `DecodeConfig`); device_index: the CUDA device."""

    kind: str = "none"
    device_index: int = 0


def read_frames(
    info: MediaInfo, on_side: SideSink | None = None, reencode: frozenset[int] = frozenset(),
    hwaccel: HardwareDecode = HardwareDecode(), on_decoder: DecoderSink | None = None,
    on_warning: WarningSink | None = None, seek_dts: int | None = None,
) -> Iterator[Frame]:
    """Yield every frame of `info.path`; hand side-stream data to `on_side`.

    `reencode` holds the indices of side streams whose packets must be decoded to audio
    frames (the output container does not take their codec). `on_decoder` hears once which
    decoder the video goes through; `on_warning` hears what concerns the whole stream (it
    ended early). `seek_dts` starts decoding at the keyframe with that decode timestamp
    (or the one before it), for a segment of the video (see `FrameRange`).
    """
    if info.kind == "image":
        yield read_image(info)
        return
    yield from _read_video(info, on_side, reencode, hwaccel, on_decoder or (lambda _: None),
                           on_warning or (lambda _: None), seek_dts)


def read_image(info: MediaInfo) -> Frame:
    try:
        with quiet_bomb_warning(info.path), Image.open(info.path) as img:
            img = ImageOps.exif_transpose(img)
            rgb, alpha = _to_rgb8(img)
    except OSError as exc:
        raise InputError(f"{info.path}: not a readable image ({exc})") from exc
    return Frame(index=0, image=rgb, pts=0, time_base=Fraction(1, 1), alpha=alpha)


def _to_rgb8(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode (16-bit, grey, palette, alpha, CMYK) to uint8 RGB plus optional alpha."""
    alpha = None
    if img.mode == "F":  # 32-bit float, usually 0-1 (Pillow's own convert clips it to black)
        wide = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = wide.max(initial=0)
        peak = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else top
        grey = np.clip(np.round(wide * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2)), None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if wide.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(wide * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2)), None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[..., 3])
        return np.ascontiguousarray(rgba[..., :3]), alpha
    return np.array(img.convert("RGB")), None  # a writable copy: torch refuses read-only


def _read_video(info: MediaInfo, on_side: SideSink | None, reencode: frozenset[int],
                hwaccel: HardwareDecode, on_decoder: DecoderSink, on_warning: WarningSink,
                seek_dts: int | None = None):
    container = _open_with_hwaccel(info, hwaccel) if hwaccel.kind != "none" else None
    if container is None:
        try:
            container = av.open(local_url(info.path), metadata_errors="replace")
        except av.FFmpegError as exc:
            raise InputError(f"{info.path}: not a readable video ({exc})") from exc
    with container:
        video = container.streams.video[0]
        on_decoder("cuda" if video.codec_context.is_hwaccel else "software")
        video.thread_type = "AUTO"  # frame + slice threads in the decoder
        if seek_dts is not None:
            container.seek(seek_dts, stream=video, backward=True)
        wanted = [video]
        if on_side is not None:
            wanted += [container.streams[s.index] for s in info.side_streams]
        repair = _TimestampRepair(info, on_warning)
        # Matroska's demuxer skips a damaged region and resyncs at the next cluster without
        # a word: every stream is demuxed so a jump in byte positions shows where.
        scan = "matroska" in info.container
        indices = {stream.index for stream in wanted}
        byte_end: int | None = None
        for packet in _demux(info, container, None if scan else wanted, repair):
            if scan:
                if packet.size and packet.pos is not None and packet.pos >= 0:
                    if byte_end is not None and packet.pos - byte_end > _GAP_BYTES:
                        repair.note_gap(byte_end, packet.pos)
                    byte_end = max(byte_end or 0, packet.pos + packet.size)
                if packet.stream.index not in indices:
                    continue
            if packet.stream.index != video.index:
                _pass_side(packet, on_side, reencode)
                continue
            repair.demuxed(packet)
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:
                repair.failed(packet, exc)
                continue
            for frame in decoded:
                yield from repair.emit(frame)
        yield from repair.finish()  # demux ended with a flush packet, so nothing is held
        if repair.count == 0:
            raise InputError(f"{info.path}: video stream has zero decodable frames")
        yield from repair.fill_to_end()


# Between two packets of a Matroska file there are a few bytes of block and cluster headers
# (7-23 in FFmpeg's files); more than this was skipped by the demuxer as damaged.
_GAP_BYTES = 1024


def _demux(info: MediaInfo, container, wanted, repair: _TimestampRepair) -> Iterator[av.Packet]:
    """The container's packets; a demuxer error ends the stream (what is missing after it
    is filled in by `fill_to_end`) instead of the run."""
    packets = container.demux(wanted) if wanted is not None else container.demux()
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            log.warning("%s: the container cannot be read past this point (%s)", info.path, exc)
            repair.errors.append(str(exc))
            return
        yield packet


def _open_with_hwaccel(info: MediaInfo, hwaccel: HardwareDecode):
    """The input container opened for GPU decoding; None ("auto") when no GPU decoder can
    be opened (no GPU, or an FFmpeg without NVDEC)."""
    from av.codec.hwaccel import HWAccel

    try:
        accel = HWAccel("cuda", device=str(hwaccel.device_index), allow_software_fallback=True)
        return av.open(local_url(info.path), metadata_errors="replace", hwaccel=accel)
    except (av.FFmpegError, NotImplementedError, RuntimeError) as exc:
        if hwaccel.kind == "cuda":
            raise DeviceError(f"{info.path}: cannot decode on the GPU ({exc}); use --hwdecode "
                              "auto (falls back to software) or none") from exc
        log.warning("hardware decoding is not available here (%s); decoding in software", exc)
        return None


def read_side_packets(info: MediaInfo, reencode: frozenset[int]) -> Iterator[SidePacket]:
    """The side streams' data alone (no video decoded), as the decoder thread passes it on:
    what a join of separately restored video segments muxes beside them."""
    out: list[SidePacket] = []
    with av.open(local_url(info.path), metadata_errors="replace") as container:
        wanted = [container.streams[s.index] for s in info.side_streams]
        if not wanted:
            return
        for packet in container.demux(wanted):
            _pass_side(packet, out.append, reencode)
            yield from out
            out.clear()


def _pass_side(packet: av.Packet, on_side: SideSink | None, reencode: frozenset[int]) -> None:
    if on_side is None or packet.size == 0:
        return
    stream = packet.stream
    if stream.index in reencode and stream.type == "subtitle":
        _pass_subtitle(packet, on_side)
        return
    if stream.index in reencode:
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            log.warning("audio stream %d: dropped an undecodable packet (%s)", stream.index, exc)
            return
        for frame in frames:
            t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            on_side(SidePacket(stream.index, frame, t))
        return
    ts = packet.dts if packet.dts is not None else packet.pts
    t = float(ts * packet.time_base) if ts is not None else 0.0
    on_side(SidePacket(stream.index, packet, t))


def _pass_subtitle(packet: av.Packet, on_side: SideSink) -> None:
    """A text subtitle to convert, decoded to a `SubtitleSet` (pts in microseconds)."""
    try:
        subtitle = packet.stream.codec_context.decode2(packet)
    except av.FFmpegError as exc:
        log.warning("subtitle stream %d: dropped an undecodable packet (%s)",
                    packet.stream.index, exc)
        return
    if subtitle is None or subtitle.pts is None:
        return  # a "clear the screen" packet: the converted cue has its own end
    on_side(SidePacket(packet.stream.index, subtitle, subtitle.pts / 1_000_000))


class _TimestampRepair:
    """Turns decoder output into `Frame`s with strictly increasing pts, none lost.

    Every demuxed video packet's pts is remembered. The decoder gives frames in
    presentation order, so when a frame with pts q comes out, any remembered pts below q
    that has not come out never will (its packet failed to decode, perhaps reported a
    packet or two later by a threaded decoder): it is filled with a copy of the last good
    frame (or of this one, when the loss came first).
    """

    def __init__(self, info: MediaInfo, on_warning: WarningSink = lambda _: None) -> None:
        self.info = info
        self.on_warning = on_warning
        self.count = 0
        self.errors: list[str] = []
        self._last: Frame | None = None
        self._expected: list[int] = []
        self._step = _frame_step(info)
        self._last_duration = self._step
        # AVI stores no presentation times: a frame comes out of the decoder (in
        # presentation order) with the time of the packet it came in (decode order), so
        # with B-frames the times are shuffled. Frames take the packets' slots in order.
        self._reorder = info.container == "avi"
        self._recent: deque[int] = deque(maxlen=32)  # the latest video pts demuxed
        self._gap: tuple[int, int] | None = None  # bytes skipped, before the next packet

    def note_gap(self, start: int, end: int) -> None:
        """The demuxer skipped bytes `start` to `end`: the video packets there are lost."""
        if self._recent:
            self._gap = (start, end)

    def demuxed(self, packet: av.Packet) -> None:
        # AVI: the dts is the frame's slot as written; the pts FFmpeg makes up from it
        # is shifted by the decoder's reorder delay, which differs between encoders.
        ts = packet.dts if self._reorder else packet.pts
        if ts is not None and not packet.is_discard:
            if self._gap is not None:
                self._expect_skipped(ts, *self._gap)
                self._gap = None
            heapq.heappush(self._expected, ts)
            self._recent.append(ts)

    def _expect_skipped(self, resumed: int, start: int, end: int) -> None:
        """The frame slots, one frame step apart, between the packets demuxed before a
        skipped region and `resumed`, the first after it, that no packet came for: they are
        expected, so they are filled (and logged) like frames lost in decoding."""
        # Below the median of the latest pts every slot has been demuxed (a B-frame is moved
        # only a few places from its slot); between there and `resumed`, what is missing is lost.
        seen, low = set(self._recent), sorted(self._recent)[len(self._recent) // 2]
        slots = [resumed - k * self._step for k in range(1, (resumed - low) // self._step + 1)]
        lost = [slot for slot in slots if slot > low and slot not in seen]
        if not lost:
            return
        tb = self.info.time_base
        message = (f"{self.info.path}: bytes {start}-{end} are damaged and were skipped by "
                   f"the demuxer: {len(lost)} frames lost between {float(min(lost) * tb):.3f} "
                   f"s and {float(max(lost) * tb):.3f} s, filled with a neighbour")
        log.warning("%s", message)
        self.on_warning(message)
        self.errors.append(f"bytes {start}-{end} of the file are damaged")
        for slot in lost:
            heapq.heappush(self._expected, slot)

    def failed(self, packet: av.Packet, exc: Exception) -> None:
        log.warning("%s: decode error near pts %s (%s)", self.info.path, packet.pts, exc)
        self.errors.append(str(exc))

    def emit(self, av_frame: av.VideoFrame) -> Iterator[Frame]:
        pts = av_frame.pts
        if self._reorder and self._expected:
            pts = self._expected[0]
        if pts is None:
            pts = self._last.pts + self._step if self._last else 0
        image = _upright_rgb(av_frame, self.info.rotation)
        yield from self._fill_lost_before(pts, image)
        while self._expected and self._expected[0] == pts:
            heapq.heappop(self._expected)
        warnings = ["decoder marked this frame corrupt"] if av_frame.is_corrupt else []
        yield from self._push(image, pts, warnings, av_frame.duration or 0)
        self._last_duration = av_frame.duration or self._step

    def finish(self) -> Iterator[Frame]:
        if self._last is not None:
            yield from self._fill_lost_before(None, self._last.image)

    def fill_to_end(self) -> Iterator[Frame]:
        """A stream that stops before the end its container declares (a truncated or damaged
        file the demuxer gave up on) is filled to that end with the last frame, at the
        stream's frame step, each filled frame logged; the console and the summary say so."""
        if self.info.end_s is None or self._last is None:
            return
        end_pts = round(self.info.end_s / self.info.time_base)
        yield from self._fill_slots(end_pts, f"{self.info.path}: the video stream ends before "
                                    f"the {self.info.end_s:.3f} s its container declares",
                                    "stream ended early; repeated the last frame")

    def _fill_slots(self, until: int, why: str, note: str) -> Iterator[Frame]:
        """Copies of the last frame, one a frame step, from its end up to `until`, with a
        warning on the console and in the summary when any is needed."""
        last = self._last
        start = last.pts + self._last_duration
        missing = int((until - start) / self._step + 0.25)
        if missing < 1:
            return
        tb = self.info.time_base
        message = (f"{why}: {missing} frames missing from {float(start * tb):.3f} s to "
                   f"{float(until * tb):.3f} s, filled with the last frame before them")
        log.warning("%s", message)
        self.on_warning(message)
        pts = start
        for _ in range(missing):
            yield from self._push(last.image.copy(), pts, [note])
            pts += self._step

    def _fill_lost_before(self, pts: int | None, fallback: np.ndarray) -> Iterator[Frame]:
        while self._expected and (pts is None or self._expected[0] < pts):
            lost = heapq.heappop(self._expected)
            why = self.errors[-1] if self.errors else "no frame came out of the decoder"
            source = self._last.image if self._last is not None else fallback
            yield from self._push(source.copy(), lost,
                                  [f"frame lost in decoding ({why}); repeated a neighbour"])

    def _push(self, image: np.ndarray, pts: int, warnings: list[str],
              duration: int = 0) -> Iterator[Frame]:
        if self._last is not None and pts <= self._last.pts:
            warnings = [*warnings, f"non-increasing pts {pts} moved to {self._last.pts + 1}"]
            pts = self._last.pts + 1
        frame = Frame(self.count, image, pts, self.info.time_base, warnings,
                      duration=duration)
        self.count += 1
        self._last = frame
        yield frame


def _frame_step(info: MediaInfo) -> int:
    if info.rate:
        return max(1, round(1 / (info.rate * info.time_base)))
    return 1


def _upright_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    # Convert with the frame's own matrix and range so BT.709 / full-range sources keep colour.
    rgb = frame.to_ndarray(format="rgb24", src_colorspace=frame.colorspace or None,
                           src_color_range=frame.color_range or None)
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb
