"""Check an input path and describe it before any thread starts.

Every failure becomes an `InputError` that names the file and the problem in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

log = logging.getLogger(__name__)

# As for images (Pillow's DecompressionBombError threshold): larger frames are refused.
MAX_VIDEO_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class SideStream:
    """An audio or subtitle stream to carry over to the output."""

    index: int
    kind: str  # "audio" | "subtitle"
    codec: str


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    kind: str  # "video" | "image"
    width: int  # upright (after rotation)
    height: int
    rotation: int = 0  # counter-clockwise degrees of the display matrix, multiple of 90
    time_base: Fraction = Fraction(1, 1)
    rate: Fraction | None = None
    frame_count: int = 1  # from the container index; 0 when unknown
    duration_s: float | None = None
    pix_fmt: str = "rgb24"
    bit_depth: int = 8
    color: dict[str, int] = field(default_factory=dict)
    side_streams: tuple[SideStream, ...] = ()
    has_alpha: bool = False
    end_s: float | None = None  # where the container says the video stream ends (seconds)
    container: str = ""  # FFmpeg's demuxer name(s), e.g. "avi", "matroska,webm"


def local_url(path: str | os.PathLike[str]) -> str:
    """What to hand `av.open` for a local file: FFmpeg reads a name with a colon in it
    (`clip12:30.mp4`, `pipe:0.mp4`) as a protocol URL, so every path goes through the file
    protocol explicitly."""
    return "file:" + os.path.abspath(path)


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


# Pillow's format names and FFmpeg's demuxer names of what `probe` accepts, with the
# extension each is restored under.
_IMAGE_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
_VIDEO_DEMUXERS = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi"}


def sniff_extension(path: str | os.PathLike[str]) -> str:
    """The extension a file's content calls for (`.jpg`, `.mp4`, ...), found by opening it,
    whatever its name: for a file that arrives without a trustworthy name (an upload).
    Raises `InputError` when it is none of the images or videos `probe` accepts."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        with quiet_bomb_warning(path), Image.open(path) as img:
            if img.format in _IMAGE_FORMATS:
                return _IMAGE_FORMATS[img.format]
            raise InputError(f"{path}: a {img.format} image; images: "
                             f"{' '.join(sorted(set(_IMAGE_FORMATS)))}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        pass
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large to decode safely ({exc})") from exc
    try:
        with av.open(local_url(path), metadata_errors="replace") as container:
            demuxer = container.format.name
            has_video, has_audio = bool(container.streams.video), bool(container.streams.audio)
    except av.FFmpegError as exc:
        raise InputError(f"{path}: neither an image nor a video ({_reason(exc)})") from exc
    if demuxer not in _VIDEO_DEMUXERS:
        raise InputError(f"{path}: not a video or image vidrestore restores (FFmpeg reads it "
                         f"as {demuxer!r}); videos: mp4 mov mkv webm avi; images: jpg png "
                         "webp bmp tiff")
    if not has_video:  # as `probe` says it
        raise InputError(f"{path}: has no video stream "
                         f"({'audio only' if has_audio else 'no streams'})")
    return _VIDEO_DEMUXERS[demuxer]


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video or image file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    kind = media_kind(path)
    if kind is None:
        raise InputError(
            f"{path}: unknown extension {path.suffix or '(none)'!r}; videos: "
            f"{' '.join(VIDEO_EXTENSIONS)}; images: {' '.join(IMAGE_EXTENSIONS)}"
        )
    return _probe_image(path) if kind == "image" else _probe_video(path)


def _probe_image(path: Path) -> MediaInfo:
    try:
        with quiet_bomb_warning(path, report=True):
            with Image.open(path) as img:
                img.verify()  # catches truncated and corrupt files cheaply
            with Image.open(path) as img:
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    raise InputError(
                        f"{path}: has {frames} frames (an animation or a multi-page image); "
                        "only single images are restored: convert it to a video first "
                        "(e.g. ffmpeg -i IN clip.mp4)")
                img.load()
                width, height = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation swaps axes
                    width, height = height, width
                has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({_reason(exc)})") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large to decode safely ({exc})") from exc
    return MediaInfo(path=path, kind="image", width=width, height=height, has_alpha=has_alpha)


@contextlib.contextmanager
def quiet_bomb_warning(path: Path, report: bool = False):
    """Pillow's DecompressionBombWarning (90-180 Mpx) as one log line naming the file, not a
    raw warning with a site-packages path; `report=False` only silences it (said once)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        yield
    if report and any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        log.warning("%s: a very large image; decoding it takes a lot of memory", path)


def _probe_video(path: Path) -> MediaInfo:
    try:
        container = av.open(local_url(path), metadata_errors="replace")
    except av.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video ({_reason(exc)})") from exc
    with container:
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no streams"
            raise InputError(f"{path}: has no video stream ({what})")
        stream = container.streams.video[0]
        _check_index_complete(path, stream)
        first = _first_frame(path, container, stream)
        rotation = int(round(first.rotation or 0)) % 360
        if rotation % 90:
            rotation = 0  # arbitrary angles are rare; the frames stay as stored
        ctx = stream.codec_context
        width, height = first.width, first.height
        if width * height > MAX_VIDEO_PIXELS:
            raise InputError(
                f"{path}: frames of {width}x{height} ({width * height / 1e6:.0f} Mpx) are "
                f"larger than the {MAX_VIDEO_PIXELS / 1e6:.0f} Mpx a video frame may have "
                "(the limit images have too); scale it down first")
        if rotation in (90, 270):
            width, height = height, width
        sides = tuple(
            SideStream(s.index, s.type, _codec_id_name(s))
            for s in container.streams
            if (s.type in ("audio", "subtitle") or (s.type == "video" and s is not stream))
            and s.codec_context is not None
        )
        duration = None
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        color = {
            "color_range": int(first.color_range),
            "colorspace": int(first.colorspace),
            "color_primaries": int(ctx.color_primaries),
            "color_trc": int(ctx.color_trc),
        }
        return MediaInfo(
            end_s=_declared_end(stream),
            container=container.format.name,
            path=path,
            kind="video",
            width=width,
            height=height,
            rotation=rotation,
            time_base=stream.time_base,
            rate=Fraction(rate) if rate else None,
            frame_count=stream.frames or 0,
            duration_s=duration,
            pix_fmt=first.format.name,
            bit_depth=_bit_depth(first.format),
            color=color,
            side_streams=sides,
        )


def _check_index_complete(path: Path, stream: av.video.stream.VideoStream) -> None:
    """An indexed container (mp4, mov, avi) any of whose entries points past the end of the
    file was cut short or is damaged: the demuxer would stop there without a word."""
    entries = stream.index_entries
    size = path.stat().st_size
    for i in range(len(entries)):
        entry = entries[i]
        if entry.pos > 0 and entry.pos + entry.size > size:
            where = "the index needs" if i == len(entries) - 1 else f"index entry {i} of " \
                f"{len(entries)} points to"
            raise InputError(
                f"{path}: truncated ({where} {entry.pos + entry.size} bytes, the file has {size})"
            )


_PROBE_PACKETS = 250  # how far to look for a first decodable frame past damaged packets


def _first_frame(path: Path, container: av.container.InputContainer, stream) -> av.VideoFrame:
    """The first frame that decodes; damaged packets before it are skipped (the decoder
    fills them in later), so a damaged first keyframe does not refuse a clip that decodes."""
    first_error: av.FFmpegError | None = None
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            try:
                for frame in packet.decode():
                    return frame
            except av.FFmpegError as exc:
                first_error = first_error or exc
            if packets >= _PROBE_PACKETS:
                break
    except av.FFmpegError as exc:
        first_error = first_error or exc
    if first_error is not None:
        raise InputError(f"{path}: video cannot be decoded ({_reason(first_error)})") \
            from first_error
    raise InputError(f"{path}: video stream has zero frames")


def _declared_end(stream) -> float | None:
    """Where the container says the video stream ends: its duration (mp4, mov, avi) or
    Matroska's per-track DURATION tag; None when it does not say."""
    if stream.duration is not None and stream.duration > 0:
        start = stream.start_time or 0
        return float((start + stream.duration) * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def _codec_id_name(stream) -> str:
    """The codec's own name (`mp3`), not its decoder's (`mp3float`): what a container takes
    is decided by codec id."""
    ctx = stream.codec_context
    try:
        return ctx.codec.canonical_name
    except AttributeError:
        return ctx.name


def _bit_depth(fmt: av.VideoFormat) -> int:
    try:
        return max(c.bits for c in fmt.components)
    except (AttributeError, ValueError):
        return 8


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    # FFmpeg messages often repeat the file name; keep the first line, drop the path echo.
    return text.splitlines()[0].split(": '")[0].strip()
