"""Cutting a video at keyframes and joining its separately restored segments losslessly.

`video_index` reads the video stream's packets (no decoding) for each frame's pts in
presentation order and the keyframes' pts and dts. `join_segments` stream-copies the
encoded segments' video packets, in order, into one output and copies the source's audio
and subtitles beside them once, as a whole run's writer would (`VideoWriter`'s side-stream
handling: copied packet for packet, or re-encoded/converted where the container needs it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av

from ..config import EncodeConfig
from ..errors import EncodeError, InputError
from .decode import SidePacket, read_side_packets
from .encode import AUDIO_LEAD_S, VideoWriter
from .plan import OutputPlan
from .probe import MediaInfo, local_url


@dataclass(frozen=True)
class VideoIndex:
    """Every frame's pts in presentation order, and the keyframes' (pts, dts)."""

    pts: tuple[int, ...]
    keyframes: tuple[tuple[int, int], ...]


def video_index(info: MediaInfo) -> VideoIndex:
    try:
        with av.open(local_url(info.path), metadata_errors="replace") as container:
            stream = container.streams.video[0]
            pts, keys = [], []
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0 or packet.is_discard:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append((packet.pts, packet.dts if packet.dts is not None
                                 else packet.pts))
    except av.FFmpegError as exc:
        raise InputError(f"{info.path}: cannot read the video's packets ({exc})") from exc
    return VideoIndex(tuple(sorted(pts)), tuple(sorted(keys)))


class _JoinWriter(VideoWriter):
    """A `VideoWriter` whose video stream is copied from encoded segments, not encoded."""

    def __init__(self, path: Path, plan: OutputPlan, info: MediaInfo, enc: EncodeConfig,
                 template: Path) -> None:
        self._template = template
        self._last_dts: int | None = None
        super().__init__(path, plan, info, enc)

    def _add_video_stream(self, enc: EncodeConfig):
        with av.open(local_url(self._template)) as segment:
            source = segment.streams.video[0]
            stream = self.container.add_stream_from_template(source)
            self.time_base = source.time_base
            stream.time_base = source.time_base
            self.extradata = bytes(source.codec_context.extradata or b"")
        return stream

    def copy(self, packet: av.Packet, side: Iterator[SidePacket]) -> None:
        """Mux one segment packet, after the side packets up to a little past its time."""
        ts = packet.dts if packet.dts is not None else packet.pts
        time_s = float(ts * packet.time_base) if ts is not None else 0.0
        for item in side:
            self.add_side(item)
            if item.time > time_s + AUDIO_LEAD_S:
                break
        self._mux_side_until(time_s + AUDIO_LEAD_S)
        # Each segment's encoder starts its decode times a reorder delay before its first
        # frame; where that reaches back into the previous segment, they are moved up (never
        # past the pts, so every frame keeps its presentation time). Matroska stores no
        # decode times: its demuxer leaves the first ones unset, and they are made the same way.
        dts = packet.dts
        if dts is None or (self._last_dts is not None and dts <= self._last_dts):
            dts = packet.pts if self._last_dts is None else self._last_dts + 1
            if dts is not None and packet.pts is not None and dts > packet.pts:
                raise EncodeError(f"{self.plan.path}: segment decode times overlap by more "
                                  "than their frames allow; restore without --segments")
            packet.dts = dts
        if dts is not None:
            self._last_dts = dts
        packet.stream = self.video
        self.container.mux(packet)

    def _flush_video(self) -> None:
        return  # nothing is encoded here: the segments were


def join_segments(info: MediaInfo, plan: OutputPlan, enc: EncodeConfig,
                  segments: Sequence[Path], out: Path) -> int:
    """Write `out` from the `segments` (in order) and `info`'s side streams as `plan` says;
    return the number of video packets. The segments must come from one encoder setting:
    their stream parameters (extradata) are checked to be the same."""
    writer = _JoinWriter(out, plan, info, enc, segments[0])
    side = read_side_packets(info, plan.reencode_indices)
    count = 0
    try:
        for path in segments:
            with av.open(local_url(path)) as container:
                stream = container.streams.video[0]
                if bytes(stream.codec_context.extradata or b"") != writer.extradata:
                    raise EncodeError(f"{path}: encoded with other stream parameters than "
                                      f"{segments[0].name}; cannot be joined by copying")
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue  # the demuxer's flush packet
                    writer.copy(packet, side)
                    count += 1
        for item in side:
            writer.add_side(item)
        writer.close()
    except (av.FFmpegError, OSError) as exc:
        writer.abort()
        raise EncodeError(f"{plan.path}: joining the segments failed ({exc})") from exc
    except BaseException:
        writer.abort()
        raise
    return count
