"""What the output will be: container format, video codec and pixel format, side streams.

Decided once, before the threads start, from the probed input and the output path, so
that the decoder knows which audio to decode and the encoder knows what to write.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import EncodeConfig
from ..errors import OutputError
from .encoders import check_encoder
from .probe import IMAGE_EXTENSIONS, MediaInfo, SideStream, media_kind

log = logging.getLogger(__name__)

# suffix -> (muxer, default video codec, audio codecs it takes as they are, audio fallback,
#            subtitle codecs it takes). None means "everything".
_CONTAINERS: dict[str, tuple[str, str, frozenset[str] | None, str, frozenset[str] | None]] = {
    ".mp4": ("mp4", "libx264",
             frozenset({"aac", "mp3", "alac", "flac", "opus", "ac3", "eac3", "mp2"}),
             "aac", frozenset({"mov_text"})),
    ".m4v": ("mp4", "libx264",
             frozenset({"aac", "mp3", "alac", "flac", "opus", "ac3", "eac3", "mp2"}),
             "aac", frozenset({"mov_text"})),
    ".mov": ("mov", "libx264",
             frozenset({"aac", "mp3", "alac", "ac3", "eac3", "mp2", "pcm_s16le", "pcm_s24le",
                        "pcm_s16be", "pcm_s24be", "pcm_f32le"}),
             "aac", frozenset({"mov_text"})),
    ".mkv": ("matroska", "libx264", None, "flac", None),
    ".webm": ("webm", "libvpx-vp9", frozenset({"opus", "vorbis"}), "libopus",
              frozenset({"webvtt"})),
    ".avi": ("avi", "libx264", frozenset({"mp3", "ac3", "mp2", "pcm_s16le", "pcm_u8"}),
             "libmp3lame", frozenset()),
}

# Text subtitle codecs FFmpeg decodes and encodes, in the order a conversion picks them.
TEXT_SUBTITLES = ("subrip", "webvtt", "mov_text", "ass")

IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
                 ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
_YUV420_CODECS = frozenset({"libx264", "libx265", "h264_nvenc", "hevc_nvenc"})


@dataclass(frozen=True)
class SidePlan:
    stream: SideStream
    action: str  # "copy" | "reencode" (audio) | "convert" (text subtitles) | "drop"
    codec: str  # the output codec


@dataclass(frozen=True)
class OutputPlan:
    path: Path
    kind: str  # "video" | "image"
    width: int
    height: int
    muxer: str = ""
    codec: str = ""
    pix_fmt: str = ""
    sides: tuple[SidePlan, ...] = ()
    image_format: str = ""

    @property
    def reencode_indices(self) -> frozenset[int]:
        """Side streams the decoder must decode (re-encoded audio, converted subtitles)."""
        return frozenset(p.stream.index for p in self.sides
                         if p.action in ("reencode", "convert"))

    @property
    def warnings(self) -> list[str]:
        out = []
        for p in self.sides:
            if p.action == "reencode":
                out.append(f"{p.stream.kind} stream {p.stream.index} ({p.stream.codec}) does not "
                           f"fit {self.path.suffix}; re-encoded as {p.codec}")
            elif p.action == "convert":
                out.append(f"subtitle stream {p.stream.index} ({p.stream.codec}) does not fit "
                           f"{self.path.suffix}; converted to {p.codec}")
            elif p.stream.kind == "video":
                out.append(f"video stream {p.stream.index} ({p.stream.codec}) is not "
                           "restored: only the first video stream is; dropped")
            elif p.action == "drop":
                out.append(f"{p.stream.kind} stream {p.stream.index} ({p.stream.codec}) cannot "
                           f"go into {self.path.suffix}; dropped")
        return out


def plan_output(info: MediaInfo, out: Path, scale: int, enc: EncodeConfig,
                size: tuple[int, int] | None = None) -> OutputPlan:
    """The output of `info` at `scale`, or at `size` (width, height) when that is given."""
    kind = media_kind(out)
    if kind is None:
        raise OutputError(f"{out}: unknown output extension {out.suffix or '(none)'!r}; videos: "
                          f"{' '.join(_CONTAINERS)}; images: {' '.join(IMAGE_EXTENSIONS)}")
    if kind != info.kind:
        raise OutputError(f"{out}: the input is {'an' if info.kind == 'image' else 'a'} "
                          f"{info.kind}, so the output must be one too")
    width, height = size if size is not None else (info.width * scale, info.height * scale)
    if kind == "image":
        return OutputPlan(out, kind, width, height, image_format=IMAGE_FORMATS[out.suffix.lower()])
    muxer, default_codec, audio_ok, audio_fallback, subs_ok = _CONTAINERS[out.suffix.lower()]
    codec = default_codec if enc.codec == "auto" else enc.codec
    pix_fmt = enc.pix_fmt if enc.pix_fmt != "auto" else _pick_pix_fmt(info, codec, width, height)

    pix_fmt = check_encoder(codec, muxer, out.suffix, pix_fmt, enc)
    takes = _muxer_codecs(muxer)
    sides = tuple(_plan_side(s, audio_ok, audio_fallback, subs_ok, takes)
                  for s in info.side_streams)
    return OutputPlan(out, kind, width, height, muxer, codec, pix_fmt, sides)


def _plan_side(stream: SideStream, audio_ok, audio_fallback, subs_ok,
               takes: frozenset[str]) -> SidePlan:
    """Copy what the muxer takes (by codec id: `stream.codec` is the codec's name, never a
    decoder's), re-encode other audio, convert text subtitles where a text codec fits, drop
    other subtitles and every video stream but the first (with a warning)."""
    if stream.kind == "video":
        return SidePlan(stream, "drop", stream.codec)
    fits = stream.codec in takes
    if stream.kind == "audio":
        if fits and (audio_ok is None or stream.codec in audio_ok):
            return SidePlan(stream, "copy", stream.codec)
        return SidePlan(stream, "reencode", audio_fallback)
    if fits and (subs_ok is None or stream.codec in subs_ok):
        return SidePlan(stream, "copy", stream.codec)
    if stream.codec in TEXT_SUBTITLES:
        for target in TEXT_SUBTITLES:
            if target in takes and (subs_ok is None or target in subs_ok):
                return SidePlan(stream, "convert", target)
    return SidePlan(stream, "drop", stream.codec)


@functools.cache
def _muxer_codecs(muxer: str) -> frozenset[str]:
    """The codecs (by codec name) FFmpeg's `muxer` can store."""
    import io

    import av  # local: only io modules import av, and plan is one of them

    with av.open(io.BytesIO(), "w", format=muxer) as container:
        return frozenset(container.supported_codecs)


def _pick_pix_fmt(info: MediaInfo, codec: str, width: int, height: int) -> str:
    deep = info.bit_depth > 8 and codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1")
    if codec in _YUV420_CODECS and (width % 2 or height % 2):
        # 4:2:0 needs even sizes; 4:4:4 keeps every pixel of an odd-sized frame.
        log.info("odd output size %dx%d: encoding as 4:4:4", width, height)
        return "yuv444p10le" if deep else "yuv444p"
    if _is_444(info.pix_fmt):
        if codec in _444_CODECS:
            return "yuv444p10le" if deep else "yuv444p"
        log.warning("%s is 4:4:4 (%s); %s writes it as 4:2:0 (--codec libx264 keeps 4:4:4)",
                    info.path, info.pix_fmt, codec)
    return "yuv420p10le" if deep else "yuv420p"


_444_CODECS = frozenset({"libx264", "libx265", "libvpx-vp9"})


def _is_444(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("yuv444", "yuvj444"))
