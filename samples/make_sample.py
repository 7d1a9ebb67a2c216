"""Make samples/sample.mp4: a short degraded clip with two faces and an audio track.

    python samples/make_sample.py [MEDIA_DIR] [-o samples/sample.mp4]

MEDIA_DIR defaults to ../shared/media beside the repository root. The clip is a slow pan and
zoom (Ken Burns) over the GFPGAN test photo `gfpgan_whole_imgs_Blake_Lively.jpg` (Apache-2.0,
see samples/SOURCES.md), degraded (rendered at low resolution and scaled back up, mild blur,
light sensor noise, strong H.264 compression), with a synthesized chord as stereo AAC.

Deterministic: the same inputs and the same PyAV/FFmpeg build give the same bytes (fixed
noise seed, single-threaded x264 without its assembly, bit-exact muxing).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = "images/gfpgan_whole_imgs_Blake_Lively.jpg"

WIDTH, HEIGHT = 320, 240  # output size (4:3)
RATE = 25
FRAMES = 50  # 2.0 s
LOW_SCALE = 0.625  # rendered at 200x150, then scaled back up: the resolution loss
BLUR_SIGMA = 0.6
NOISE_SIGMA = 3.0
CRF = 30
SEED = 20240601

AUDIO_RATE = 48000
AUDIO_BITRATE = 96_000
# Two chords, one a second: A major (A3 C#4 E4), then D major (D4 F#4 A4).
CHORDS = ((220.00, 277.18, 329.63), (293.66, 369.99, 440.00))

# Crop windows on the 700x464 photo: (centre x, centre y, width); height = width * 3 / 4.
# Both faces stay inside, the watermark at the bottom right stays out.
START = (350.0, 212.0, 560.0)
END = (356.0, 204.0, 500.0)


def _ease(t: float) -> float:
    """Smoothstep: the camera starts and stops gently."""
    return t * t * (3.0 - 2.0 * t)


def render_frames(photo: np.ndarray) -> list[np.ndarray]:
    """The degraded RGB frames of the clip, uint8 (HEIGHT, WIDTH, 3)."""
    rng = np.random.default_rng(SEED)
    low_w, low_h = round(WIDTH * LOW_SCALE), round(HEIGHT * LOW_SCALE)
    # anti-alias once: the crop is shrunk about 3.5x onto the low-resolution frame
    src = cv2.GaussianBlur(photo, (0, 0), 1.2)
    frames = []
    for i in range(FRAMES):
        t = _ease(i / (FRAMES - 1))
        cx, cy, cw = (a + (b - a) * t for a, b in zip(START, END))
        scale = low_w / cw
        # output pixel centre (u + 0.5) / scale + x0 = source coordinate
        x0, y0 = cx - cw / 2, cy - cw * 3 / 8
        shift = 0.5 * scale - 0.5
        m = np.array([[scale, 0, shift - x0 * scale], [0, scale, shift - y0 * scale]])
        low = cv2.warpAffine(src, m, (low_w, low_h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        up = cv2.resize(low, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        up = cv2.GaussianBlur(up, (0, 0), BLUR_SIGMA).astype(np.float32)
        up += rng.normal(0.0, NOISE_SIGMA, up.shape).astype(np.float32)
        frames.append(np.clip(np.round(up), 0, 255).astype(np.uint8))
    return frames


def chord_audio(seconds: float) -> np.ndarray:
    """Stereo float32 (2, n): each chord with a soft attack and decay; notes panned apart."""
    n = int(round(seconds * AUDIO_RATE))
    t = np.arange(n) / AUDIO_RATE
    out = np.zeros((2, n))
    span = seconds / len(CHORDS)
    for k, chord in enumerate(CHORDS):
        local = t - k * span
        inside = (local >= 0) & (local < span)
        attack = np.clip(local / 0.03, 0, 1)
        release = np.clip((span - local) / 0.08, 0, 1)
        env = np.where(inside, attack * release * np.exp(-1.5 * np.clip(local, 0, None)), 0.0)
        for j, hz in enumerate(chord):
            pan = (j - 1) * 0.4  # left, centre, right
            tone = env * (np.sin(2 * np.pi * hz * t) + 0.25 * np.sin(4 * np.pi * hz * t))
            out[0] += tone * (1 - pan) / 2
            out[1] += tone * (1 + pan) / 2
    out *= 0.45 / np.abs(out).max()
    return out.astype(np.float32)


def write_clip(frames: list[np.ndarray], audio: np.ndarray, path: Path) -> None:
    tb = Fraction(1, RATE)
    options = {"movflags": "faststart", "fflags": "+bitexact"}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.time_base = tb
        video.codec_context.color_range = 1  # limited (MPEG) range, BT.601, as swscale makes it
        video.codec_context.colorspace = 6
        video.codec_context.color_primaries = 6
        video.codec_context.color_trc = 6
        # x264's AVX-512 code gave different bytes from run to run on a Xeon here; its plain C
        # path is deterministic everywhere and fast enough for 50 small frames.
        video.options = {
            "crf": str(CRF), "preset": "slow", "threads": "1", "g": str(RATE),
            "x264-params": "no-asm=1",
        }
        sound = container.add_stream("aac", rate=AUDIO_RATE)
        sound.layout = "stereo"
        sound.bit_rate = AUDIO_BITRATE

        step = 1024
        done = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG"
            )
            frame.pts, frame.time_base = i, tb
            for packet in video.encode(frame):
                container.mux(packet)
            until = min(audio.shape[1], int((i + 1) / RATE * AUDIO_RATE)) if i < len(frames) - 1 \
                else audio.shape[1]
            while done < until:
                chunk = np.ascontiguousarray(audio[:, done : done + step])
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate = AUDIO_RATE
                aframe.pts, aframe.time_base = done, Fraction(1, AUDIO_RATE)
                for packet in sound.encode(aframe):
                    container.mux(packet)
                done += chunk.shape[1]
        for packet in video.encode(None):
            container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("media_dir", nargs="?", type=Path, default=REPO.parent / "shared" / "media",
                        help="the shared media folder (default: ../shared/media)")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "samples" / "sample.mp4")
    args = parser.parse_args(argv)
    photo_path = args.media_dir / PHOTO
    bgr = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
    if bgr is None:
        parser.error(f"cannot read {photo_path}")
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    frames = render_frames(photo)
    write_clip(frames, chord_audio(FRAMES / RATE), args.output)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    sys.stderr.write(
        f"wrote {args.output}: {WIDTH}x{HEIGHT}, {FRAMES} frames at {RATE} fps, AAC stereo "
        f"{AUDIO_RATE} Hz, {args.output.stat().st_size} bytes, sha256 {digest}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
