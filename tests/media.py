"""Small synthetic media for tests and benchmarks, written with PyAV and Pillow.

Plain functions, no pytest: each writes one file to the path it is given and returns that
path as a `Path`. The container format follows the file extension (.mp4, .mkv, .mov, ...).

Every video frame shows a diagonal colour gradient that scrolls right, a white square that
moves across it, and along the top a strip of `INDEX_BITS` black/white cells that spell the
frame's index in binary (most significant bit on the left, index modulo 2**INDEX_BITS).
`frame_index_of(rgb)` reads the index back from a decoded frame, so a test can tell which
source frame it is looking at after decoding, dropping, duplicating or reordering.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

INDEX_BITS = 8
AUDIO_RATE = 48000
TONE_HZ = 440.0

# Samples per audio frame handed to the encoder: each codec's own frame size where it has one,
# so every frame becomes one packet and the pts arithmetic stays obvious.
_AUDIO_FRAME = {"aac": 1024, "mp3": 1152, "libmp3lame": 1152, "opus": 960, "libopus": 960}
_AUDIO_ENCODER = {"mp3": "libmp3lame", "opus": "libopus"}

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- frame content


def _strip_geometry(width: int, height: int) -> tuple[int, int]:
    """Cell width and height of the index strip; even sizes so 4:2:0 chroma stays in a cell."""
    cell_w = max(2, (width // INDEX_BITS) // 2 * 2)
    cell_h = max(4, (height // 6) // 2 * 2)
    return cell_w, cell_h


def _gradient(width: int, height: int) -> np.ndarray:
    """A smooth RGB gradient, twice as wide as the frame so it can scroll and wrap."""
    x = np.arange(2 * width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    phase = 2 * np.pi * x / (2 * width)
    r = 128 + 90 * np.sin(phase)
    g = 40 + 160 * (y / max(1, height - 1))
    b = 128 + 90 * np.cos(phase + 2 * np.pi * y / max(1, 2 * height))
    rgb = np.stack(np.broadcast_arrays(r, g, b), axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_frame(
    index: int, width: int, height: int, *, _base: np.ndarray | None = None
) -> np.ndarray:
    """The RGB (height, width, 3) uint8 image of frame `index` (see the module docstring)."""
    base = _gradient(width, height) if _base is None else _base
    shift = (3 * index) % (2 * width)
    img = np.ascontiguousarray(np.roll(base, shift, axis=1)[:, :width])
    # a white square with a dark border moving left to right, bouncing vertically
    cell_w, cell_h = _strip_geometry(width, height)
    side = max(4, min(width, height) // 4) // 2 * 2
    span_x = max(1, width - side)
    span_y = max(1, height - cell_h - side)
    x0 = (5 * index) % span_x
    y0 = cell_h + abs((2 * index) % (2 * span_y) - span_y)
    y0 = min(y0, height - side)
    img[y0 : y0 + side, x0 : x0 + side] = 20
    img[y0 + 1 : y0 + side - 1, x0 + 1 : x0 + side - 1] = 245
    # the index strip along the top
    img[:cell_h, : cell_w * INDEX_BITS] = 0
    code = index % (1 << INDEX_BITS)
    for bit in range(INDEX_BITS):
        if code >> (INDEX_BITS - 1 - bit) & 1:
            img[:cell_h, bit * cell_w : (bit + 1) * cell_w] = 255
    return img


def frame_index_of(rgb: np.ndarray) -> int:
    """Read back the index strip of a decoded frame made by `make_frame` (upright, same size)."""
    height, width = rgb.shape[:2]
    cell_w, cell_h = _strip_geometry(width, height)
    grey = rgb[..., :3].astype(np.float32).mean(axis=-1) if rgb.ndim == 3 else rgb
    code = 0
    for bit in range(INDEX_BITS):
        cell = grey[cell_h // 4 : cell_h - cell_h // 4 or 1,
                    bit * cell_w + cell_w // 4 : (bit + 1) * cell_w - cell_w // 4 or None]
        code = (code << 1) | int(cell.mean() > 128)
    return code


def tone(
    seconds: float, *, rate: int = AUDIO_RATE, channels: int = 2, hz: float = TONE_HZ
) -> np.ndarray:
    """A sine tone as float32 (channels, samples): amplitude 0.3, `hz` on the left (even)
    channels and a fifth above on the right (odd) ones, 5 ms fade in and out."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    ramp = np.clip(np.minimum(t, (n - 1) / rate - t) / 0.005, 0.0, 1.0)
    chans = [
        0.3 * ramp * np.sin(2 * np.pi * hz * (1.5 if c % 2 else 1.0) * t) for c in range(channels)
    ]
    return np.stack(chans).astype(np.float32)


# --------------------------------------------------------------------------- writers


class _AudioWriter:
    """Encodes a sine tone into one audio stream in codec-sized frames, sample-exact pts."""

    def __init__(self, container, codec: str, seconds: float, channels: int = 2) -> None:
        self.container = container
        self.stream = container.add_stream(_AUDIO_ENCODER.get(codec, codec), rate=AUDIO_RATE)
        self.stream.layout = "stereo" if channels == 2 else "mono"
        self.samples = tone(seconds, channels=channels)
        self.step = _AUDIO_FRAME.get(self.stream.codec_context.name, 1024)
        self.done = 0

    def write_until(self, seconds: float) -> None:
        fmt = self.stream.format.name
        layout = self.stream.layout.name
        limit = self.samples.shape[1]
        if math.isfinite(seconds):
            limit = min(limit, int(seconds * AUDIO_RATE))
        while self.done < limit:
            chunk = self.samples[:, self.done : self.done + self.step]
            if fmt.startswith("s16"):
                data = np.round(chunk * 32767).astype(np.int16)
            elif fmt.startswith("s32"):
                data = np.round(chunk * 2147483647.0).astype(np.int32)
            else:
                data = chunk
            if not fmt.endswith("p"):  # packed: channels interleaved in one plane
                data = data.T.reshape(1, -1)
            data = np.ascontiguousarray(data)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate = AUDIO_RATE
            frame.pts = self.done
            frame.time_base = Fraction(1, AUDIO_RATE)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.done += chunk.shape[1]

    def finish(self) -> None:
        self.write_until(math.inf)
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def _frame_times(frames: int, rate: Fraction, vfr: bool) -> tuple[Fraction, list[int], int]:
    """Time base, pts per frame and end time (pts after the last frame).

    CFR: 1/rate and 0, 1, 2, ... VFR: 1/90000 and intervals alternating half and one and a
    half nominal frame periods (1 and 3 half-periods: 1800, 5400, 1800, ... at 25 fps), so
    the average rate is still about `rate` but no two neighbouring intervals are equal.
    """
    if not vfr:
        return Fraction(1) / rate, list(range(frames)), frames
    tb = Fraction(1, 90000)
    half = int(round(Fraction(1, 2) / rate / tb))
    pts, t = [], 0
    for i in range(frames):
        pts.append(t)
        t += half * (1 if i % 2 == 0 else 3)
    return tb, pts, t


def make_clip(
    path: PathLike,
    *,
    width: int = 96,
    height: int = 64,
    frames: int = 12,
    rate: int | Fraction = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = None,
    audio_seconds: float | None = None,
    vfr: bool = False,
    rotation: int = 0,
    bit_depth: int = 8,
    color: dict[str, object] | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    faststart: bool = False,
) -> Path:
    """Write a test clip and return its path.

    Video: `frames` frames of `make_frame` content at `width`x`height`, encoded with
    `codec` in `pix_fmt` (`bit_depth=10` turns yuv420p into yuv420p10le; libx264 then makes
    High 10). Odd sizes need pix_fmt="yuv444p" (libx264 refuses 4:2:0 at odd sizes).
    CFR clips have pts 0, 1, 2, ... in time base 1/rate as written; the muxer rescales:
    mp4/mov read back in 1/(rate*512) (1/12800 at 25 fps), mkv in 1/1000. `vfr=True`
    writes pts in 1/90000 (mp4 keeps it, mkv 1/1000) with intervals alternating 0.5 and 1.5
    frame periods (see `_frame_times`). Each packet carries its frame's duration, so the
    stream's duration is the end of the last frame.

    `rotation` (counter-clockwise degrees) goes into the container's display matrix via
    `stream.set_display_rotation`; the pixels stay unrotated, so a decoder reads
    `frame.rotation == rotation` modulo 360 (FFmpeg reads angles back in [-180, 180):
    180 comes back as -180, 270 as -90).

    `color`: tags for the stream and the pixel conversion, keys of `VideoCodecContext`:
    `color_range` (1 = limited/MPEG, 2 = full/JPEG), `colorspace` (1 = BT.709, 5 = BT.601),
    `color_primaries`, `color_trc`; e.g. `{"colorspace": 1, "color_primaries": 1,
    "color_trc": 1, "color_range": 2}` for BT.709 full range. The RGB content is converted
    with the matching matrix and range, so the tags tell the truth. (FFmpeg's h264 decoder
    hands full-range 8-bit frames back as the legacy format yuvj420p.)

    `audio`: None or a codec name ("aac", "mp3", "opus", "pcm_s16le", "flac"): a 48 kHz
    stereo sine tone (`tone`) lasting `audio_seconds` (default: the video's duration), with
    sample-exact pts and a 5 ms fade at both ends. With FFmpeg 8, mp4 and mkv take all five
    (mp4 stores pcm_s16le as ISO 'ipcm'); mov refuses opus and flac (`av.ArgumentError`).

    `gop` sets the keyframe interval, `options` are passed to the video encoder (e.g.
    `{"preset": "ultrafast"}`), `faststart` moves the mp4 index (moov) to the front.
    """
    path = Path(path)
    rate = Fraction(rate)
    if bit_depth == 10 and pix_fmt == "yuv420p":
        pix_fmt = "yuv420p10le"
    elif bit_depth not in (8, 10):
        raise ValueError(f"bit_depth must be 8 or 10, not {bit_depth}")
    color = dict(color or {})
    container_options = {"movflags": "faststart"} if faststart else {}
    tb, pts, end = _frame_times(frames, rate, vfr)
    durations = {p: q - p for p, q in zip(pts, pts[1:] + [end], strict=True)}
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = tb
        stream.codec_context.time_base = tb
        if gop is not None:
            stream.codec_context.gop_size = gop
        for key, value in color.items():
            setattr(stream.codec_context, key, value)
        if options:
            stream.options = dict(options)
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = _AudioWriter(container, audio, float(end * tb) if audio_seconds is None
                                 else audio_seconds)

        base = _gradient(width, height)
        reformat: dict[str, object] = {"format": pix_fmt}
        if "colorspace" in color:
            reformat["dst_colorspace"] = color["colorspace"]
        if "color_range" in color:
            reformat["dst_color_range"] = color["color_range"]
        for i in range(frames):
            rgb = make_frame(i, width, height, _base=base)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(**reformat)
            for key in ("color_primaries", "color_trc"):
                if key in color:
                    setattr(frame, key, color[key])
            frame.pts = pts[i]
            frame.time_base = tb
            for packet in stream.encode(frame):
                packet.duration = durations.get(packet.pts, packet.duration)
                container.mux(packet)
            if sound is not None:  # keep the audio about level with the video
                sound.write_until(float(pts[i] * tb) + 0.2)
        for packet in stream.encode(None):
            packet.duration = durations.get(packet.pts, packet.duration)
            container.mux(packet)
        if sound is not None:
            sound.finish()
    return path


def make_long_clip(
    path: PathLike, frames: int = 250, *, width: int = 1280, height: int = 720, **kwargs
) -> Path:
    """A 1280x720 clip of `frames` frames for benchmarks, libx264 preset ultrafast.

    Takes the other `make_clip` keywords (audio, rate, ...). About 6 ms a frame here
    (250 frames with AAC audio: 1.5 s, 1.1 MB).
    """
    opts = {"preset": "ultrafast", **kwargs.pop("options", {})}
    return make_clip(path, width=width, height=height, frames=frames, options=opts, **kwargs)


def make_image(path: PathLike, mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Path:
    """Write a still image in Pillow `mode` and return its path; format from the extension.

    Content: `make_frame(0)` (gradient, white square, index strip all black). Per mode:
    "RGB" as is; "L" its luma; "RGBA" plus an alpha ramp from 0 (left) to 255 (right);
    "I;16" a 16-bit grey ramp using the full 0..65535 range (PNG and TIFF take it);
    "P" the RGB image quantised to a 16-colour adaptive palette. JPEG takes only RGB and L.
    """
    path = Path(path)
    width, height = size
    rgb = make_frame(0, width, height)
    if mode == "RGB":
        img = Image.fromarray(rgb, "RGB")
    elif mode == "L":
        img = Image.fromarray(rgb, "RGB").convert("L")
    elif mode == "RGBA":
        ramp = np.linspace(0, 255, width).round().astype(np.uint8)
        alpha = np.broadcast_to(ramp, (height, width))
        img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "I;16":
        ramp = np.linspace(0, 65535, width * height).round().astype("<u2").reshape(height, width)
        img = Image.frombytes("I;16", (width, height), ramp.tobytes())
    elif mode == "P":
        img = Image.fromarray(rgb, "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    else:
        raise ValueError(f"unsupported mode {mode!r}")
    img.save(path)
    return path


def _packet_payloads(path: Path) -> list[tuple[int, int, bool, int]]:
    """(file offset of the payload, size, keyframe, pts) of each video packet, demux order.

    `packet.pos` is where the container's record for the packet starts: in mp4 that is the
    payload itself, in mkv the SimpleBlock header a few bytes before it; so look the bytes up.
    """
    data = path.read_bytes()
    out = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if not packet.size:
                continue
            payload = bytes(packet)
            offset = data.find(payload, max(0, packet.pos))
            if offset < 0:
                raise RuntimeError(f"packet at {packet.pos} not found in {path}")
            out.append((offset, packet.size, packet.is_keyframe, packet.pts))
    return out


def make_damaged_clip(
    path: PathLike, *, frames: int = 24, gop: int = 8, damaged: int = 1, **kwargs
) -> Path:
    """A clip (mp4 or mkv) with `damaged` consecutive packets in the middle overwritten.

    Written by `make_clip` without B-frames (bf=0), keyframes every `gop` frames, so packet
    i holds frame i. The damaged packets are frames `damaged_frames(frames, gop, damaged)`:
    from frames // 2 on (moved one on if that is a keyframe), never a keyframe. In each,
    everything after the first 8 payload bytes (4-byte NAL length, NAL header, 3 bytes of
    slice header) is replaced by fixed pseudo-random bytes, so the container stays intact
    and the slice header is nonsense. PyAV (FFmpeg 8): decoding such a packet raises
    `av.InvalidDataError` and gives no frame (with threaded decoding the error surfaces a
    packet or two later); the frames after it up to the next keyframe decode from a missing
    reference (concealed, wrong content, no error, `is_corrupt` stays False); from the next
    keyframe on every frame is exact. So `frames - damaged` frames come out: with the
    defaults 23, namely frames 0-11 exact, 13-15 concealed, 16-23 exact.
    """
    path = Path(path)
    opts = {"bf": "0", **kwargs.pop("options", {})}
    make_clip(path, frames=frames, gop=gop, options=opts, **kwargs)
    packets = _packet_payloads(path)
    rng = np.random.default_rng(1234)
    with open(path, "r+b") as f:
        for index in damaged_frames(frames, gop, damaged):
            offset, size, key, _ = packets[index]
            assert not key, "damaged_frames picked a keyframe"
            keep = min(8, max(5, size // 2))  # tiny packets: keep just NAL length and header
            f.seek(offset + keep)
            f.write(rng.integers(0, 256, size - keep, dtype=np.uint8).tobytes())
    return path


def damaged_frames(frames: int = 24, gop: int = 8, damaged: int = 1) -> list[int]:
    """Indices of the frames `make_damaged_clip` damages with these arguments."""
    first = frames // 2
    out: list[int] = []
    i = first
    while len(out) < damaged and i < frames:
        if i % gop:
            out.append(i)
        i += 1
    return out


def make_truncated_clip(
    path: PathLike,
    *,
    faststart: bool = True,
    keep: float = 0.5,
    frames: int = 30,
    width: int = 160,
    height: int = 120,
    **kwargs,
) -> Path:
    """An mp4 cut after `keep` of its bytes, as an interrupted download or copy leaves it.

    Written by `make_clip` without B-frames (bf=0), so what survives decodes in order.
    `faststart=True`: the index (moov, about 1 KB here) is at the front, so the file opens
    and claims all `frames` frames (`stream.frames`), but the last index entries point past
    the end of the file; decoding yields the first frames whose data survived (9 of the
    default 30) and the last, partial packet raises `av.InvalidDataError`.
    `faststart=False`: the moov atom was at the end and is gone; `av.open` raises
    `av.InvalidDataError` ("moov atom not found").
    """
    path = Path(path)
    opts = {"bf": "0", **kwargs.pop("options", {})}
    make_clip(path, frames=frames, width=width, height=height, faststart=faststart,
              options=opts, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_text_as_video(path: PathLike) -> Path:
    """A plain text file under a video name (e.g. notes.mp4); `av.open` raises on it."""
    path = Path(path)
    path.write_text("This is not a video.\nIt is a text file with a video extension.\n" * 20)
    return path


def make_audio_only(path: PathLike, *, seconds: float = 1.0, codec: str = "aac") -> Path:
    """A file (e.g. .mp4 or .m4a) holding only one audio stream: a 48 kHz stereo tone."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        sound = _AudioWriter(container, codec, seconds)
        sound.finish()
    return path


def make_zero_frame_clip(
    path: PathLike, *, width: int = 96, height: int = 64, rate: int = 25, codec: str = "libx264"
) -> Path:
    """An mp4/mov with a video stream (size, codec, extradata) but not a single packet.

    Written with movflags=empty_moov: the header is written and the file closed without
    muxing anything. PyAV opens it, sees one video stream `width`x`height` with
    `frames == 0`, and decoding yields no frame. (Without empty_moov the mp4 muxer leaves a
    track with no samples out of the file altogether: PyAV then sees no stream at all. An
    .mkv written the same way came out unreadable with PyAV 18.1 / FFmpeg 8, so only
    mp4/mov/m4v are offered.)
    """
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
        raise ValueError("make_zero_frame_clip writes .mp4, .mov or .m4v only")
    with av.open(str(path), "w", options={"movflags": "empty_moov"}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()
    return path


def make_clip_of_images(path: PathLike, images: list[np.ndarray], *, rate: int = 20,
                        crf: int = 12) -> Path:
    """An h264 clip (yuv420p, CFR `rate`) of the given (H, W, 3) uint8 RGB frames (even H, W)."""
    path = Path(path)
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for rgb in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def first_frames(path: PathLike, count: int) -> list[np.ndarray]:
    """The first `count` decoded frames of a video as (H, W, 3) uint8 RGB."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def make_face_clip(path: PathLike, media: PathLike, frames: int, *, width: int = 1280,
                   height: int = 720, rate: int = 25, crf: int = 18,
                   gop: int | None = None) -> Path:
    """A clip with one real face moving a little over a blurred photo, libx264 yuv420p.

    The face is GFPGAN's aligned Adele crop from `media`/images (a degraded real face),
    scaled to 45% of the frame height, feathered into `gfpgan_whole_imgs_10045.png`
    blurred past recognition (its own faces are not found), and moved along a slow
    Lissajous path of +-3% of the frame size. For benchmarks at a given size; about
    10 ms a 720p frame here, streamed, so long clips take no memory. `gop` sets the
    keyframe interval (x264's default is 250).
    """
    path, images = Path(path), Path(media) / "images"
    background = _blurred_background(images / "gfpgan_whole_imgs_10045.png", width, height)
    side = int(0.45 * height) // 2 * 2
    face = np.asarray(Image.open(images / "gfpgan_cropped_faces_Adele_crop.png")
                      .convert("RGB").resize((side, side), Image.LANCZOS), dtype=np.float32)
    alpha = _feathered_disc(side)[..., None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        if gop is not None:
            stream.codec_context.gop_size = gop
        for index in range(frames):
            t = index / rate
            left = int((width - side) / 2 + 0.03 * width * math.sin(2 * math.pi * t / 3.1))
            top = int((height - side) / 2 + 0.03 * height * math.sin(2 * math.pi * t / 2.3))
            rgb = background.copy()
            region = rgb[top:top + side, left:left + side].astype(np.float32)
            rgb[top:top + side, left:left + side] = (alpha * face + (1 - alpha) * region
                                                     + 0.5).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _blurred_background(photo: Path, width: int, height: int) -> np.ndarray:
    """The photo cropped to the frame's aspect, resized, and box-blurred by shrinking to
    1/64 of the size and back (bilinear), so no face in it stays recognisable."""
    img = Image.open(photo).convert("RGB")
    aspect = width / height
    w, h = img.size
    crop_w, crop_h = (w, int(w / aspect)) if w / h < aspect else (int(h * aspect), h)
    img = img.crop(((w - crop_w) // 2, (h - crop_h) // 2, (w + crop_w) // 2, (h + crop_h) // 2))
    small = img.resize((max(1, width // 64), max(1, height // 64)), Image.BOX)
    return np.array(small.resize((width, height), Image.BILINEAR))


def _feathered_disc(side: int) -> np.ndarray:
    """(side, side) float32 alpha: 1 inside 80% of the radius, falling to 0 at the edge."""
    axis = np.linspace(-1, 1, side, dtype=np.float32)
    radius = np.hypot(axis[None, :], axis[:, None])
    return np.clip((1 - radius) / 0.2, 0, 1)
