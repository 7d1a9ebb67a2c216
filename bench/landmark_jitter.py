"""Landmark jitter and lag of the tracker's One-Euro smoothing, raw vs smoothed.

Clips (RetinaFace, bundled MobileNet-0.25 weights, on the CPU):
  - real: talk_real_1 (the steadier talking head), talk_real_2 (more head motion) and
    talk_real_3 (the front face: hardly moves) from ../shared/media/video;
  - synthetic, with ground truth: the Adele crop from ../shared/media/images scaled to
    SYNTH_FACE_PX and drawn at sub-pixel positions on a grey canvas, with per-frame pixel
    noise (so the detector's own noise shows) plus Gaussian noise of SYNTH_NOISE_PX on the
    detected points; "still" stays put, "moving" follows a smooth Lissajous path whose peak
    speed is about one face size per second (the real clips peak at 1.5 to 2).

Figures per clip, over the main track (the longest):
  jitter: mean length of the second difference of the landmark positions, pixels/frame^2;
  lag (real clips): time shift, in frames, that maximises the cross-correlation between the
    raw and the smoothed landmark velocities (sub-frame by a parabola through the peak);
  lag (synthetic): time shift, in frames, of the ground-truth path that best fits the
    smoothed landmarks; error: RMS distance from the ground truth, pixels.
Goals: smoothed jitter at most 1/3 of raw on still faces; lag at most one frame.

    python bench/landmark_jitter.py [--json bench/results/landmark_jitter.json]
        [--min-cutoff-hz F] [--beta F] [--d-cutoff-hz F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT))

from bench.run_info import run_info  # noqa: E402
from vidrestore.models import ModelStore  # noqa: E402
from vidrestore.models.factory import BUNDLED_DETECTOR, load_model  # noqa: E402
from vidrestore.stages.detect import Detections, FaceDetector  # noqa: E402
from vidrestore.stages.track import FaceTracker, TrackConfig  # noqa: E402

REAL_CLIPS = ("talk_real_1", "talk_real_2", "talk_real_3")
# which goal each clip is held to: talk_real_1 has the steadier head of the two talking
# heads (face centre spans 124x63 px, 90th percentile speed 0.45 face sizes/s), talk_real_2
# moves more (199x83 px, 0.89 face sizes/s); talk_real_3's front face hardly moves
STILL_CLIPS = ("talk_real_1", "talk_real_3", "synthetic_still")
MOVING_CLIPS = ("talk_real_2", "synthetic_moving")
SYNTH_FPS = 25.0
SYNTH_FRAMES = 250
SYNTH_FACE_PX = 192  # side of the scaled face crop: a ~110 px box, eyes ~50 px apart
SYNTH_CANVAS = (480, 640)  # height, width
SYNTH_NOISE_PX = 0.5  # extra Gaussian noise on each detected coordinate, pixels
SYNTH_PIXEL_NOISE = 0.02  # Gaussian pixel noise per frame, in [0, 1] units
PATH_AMPLITUDE_PX = (60.0, 30.0)  # x, y
PATH_PERIOD_S = (3.0, 4.1)


@dataclass
class Clip:
    """Detections of one clip and, for synthetic clips, the ground-truth landmark path."""

    name: str
    detections: list[Detections]
    times_s: np.ndarray  # (N,)
    reference: np.ndarray | None = None  # (5, 2) true landmarks at offset 0, synthetic only
    moving: bool = False

    def truth(self, times_s: np.ndarray) -> np.ndarray:
        """(M, 5, 2) true landmarks of a synthetic clip at these times."""
        offsets = _path(times_s) if self.moving else np.zeros((len(times_s), 2))
        return self.reference + offsets[:, None]


# --------------------------------------------------------------------------- clips


def real_clip(name: str, detector: FaceDetector) -> Clip:
    import av

    frames, times = [], []
    with av.open(str(MEDIA / "video" / f"{name}.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base))
    return Clip(name, _detect(detector, np.stack(frames)), np.array(times))


def synthetic_clip(moving: bool, detector: FaceDetector, seed: int = 0) -> Clip:
    """A face photo on a canvas, still or on a smooth path, with pixel and detector noise."""
    import cv2

    rng = np.random.default_rng(seed)
    bgr = cv2.imread(str(MEDIA / "images" / "gfpgan_cropped_faces_Adele_crop.png"))
    face = cv2.resize(bgr[..., ::-1], (SYNTH_FACE_PX, SYNTH_FACE_PX),
                      interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    times = np.arange(SYNTH_FRAMES) / SYNTH_FPS
    offsets = _path(times) if moving else np.zeros((len(times), 2))
    height, width = SYNTH_CANVAS
    origin = np.array([(width - SYNTH_FACE_PX) / 2, (height - SYNTH_FACE_PX) / 2])
    frames = [_draw(face, origin + off, (height, width), rng) for off in offsets]
    detections = [_jittered(d, rng) for d in _detect(detector, np.stack(frames))]
    return Clip("synthetic_moving" if moving else "synthetic_still", detections, times,
                _reference_landmarks(detections, offsets), moving)


def _path(times_s: np.ndarray) -> np.ndarray:
    """(M, 2) offsets in pixels of the moving synthetic face at these times."""
    return np.stack([a * np.sin(2 * math.pi * times_s / p)
                     for a, p in zip(PATH_AMPLITUDE_PX, PATH_PERIOD_S, strict=True)], axis=1)


def _draw(face: np.ndarray, top_left: np.ndarray, size: tuple[int, int],
          rng: np.random.Generator) -> np.ndarray:
    """The face at a sub-pixel position on a grey canvas, plus pixel noise; (H, W, 3) uint8."""
    import cv2

    height, width = size
    warp = np.float32([[1, 0, top_left[0]], [0, 1, top_left[1]]])
    drawn = cv2.warpAffine(face, warp, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(-1, -1, -1))
    canvas = np.where(drawn >= 0, drawn, 0.45)
    canvas = canvas + rng.normal(0, SYNTH_PIXEL_NOISE, canvas.shape)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)


def _jittered(det: Detections, rng: np.random.Generator) -> Detections:
    """The same detections with Gaussian noise of SYNTH_NOISE_PX on boxes and landmarks."""
    def noisy(x):
        return x + torch.from_numpy(rng.normal(0, SYNTH_NOISE_PX, x.shape).astype(np.float32))
    return Detections(noisy(det.boxes), noisy(det.landmarks), det.scores)


def _reference_landmarks(detections: list[Detections], offsets: np.ndarray) -> np.ndarray:
    """(5, 2) landmarks at offset 0: the mean of the best detections moved back by the path,
    so the detector's constant bias is not counted as error."""
    marks = np.stack([d.landmarks[0].numpy() for d in detections]).astype(np.float64)
    return (marks - offsets[:, None]).mean(0)


def _detect(detector: FaceDetector, frames: np.ndarray, batch: int = 16) -> list[Detections]:
    out = []
    for start in range(0, len(frames), batch):
        x = torch.from_numpy(frames[start:start + batch]).permute(0, 3, 1, 2).float() / 255
        out.extend(detector(x))
    return out


# --------------------------------------------------------------------------- measures


def main_track(clip: Clip, config: TrackConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices, raw and smoothed (M, 5, 2) landmarks of the clip's main track: the
    longest, and of those the one with the eyes furthest apart (talk_real_3's front face)."""
    tracker = FaceTracker(config)
    per_track: dict[int, list] = {}
    for i, (det, t) in enumerate(zip(clip.detections, clip.times_s, strict=True)):
        for face in tracker.update(det, float(t)):
            per_track.setdefault(face.track_id, []).append(
                (i, face.landmarks_raw.numpy(), face.landmarks.numpy()))
    def length_then_size(rows):
        return len(rows), np.mean([np.linalg.norm(r[1][1] - r[1][0]) for r in rows])

    rows = max(per_track.values(), key=length_then_size)
    index = np.array([r[0] for r in rows])
    return index, np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows])


def jitter(marks: np.ndarray) -> float:
    """Mean length of the second difference of (M, 5, 2) positions, pixels per frame^2."""
    return float(np.linalg.norm(np.diff(marks, 2, axis=0), axis=-1).mean())


def xcorr_lag(raw: np.ndarray, smooth: np.ndarray, max_lag: int = 10) -> float:
    """Frames by which `smooth` trails `raw`: the peak of the cross-correlation of their
    velocities (all coordinates pooled), refined by a parabola through the peak."""
    a = np.diff(raw, axis=0).reshape(len(raw) - 1, -1)
    b = np.diff(smooth, axis=0).reshape(len(smooth) - 1, -1)
    a, b = a - a.mean(0), b - b.mean(0)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array([np.sum(a[max(0, -k):len(a) - max(0, k)] * b[max(0, k):len(b) + min(0, k)])
                     for k in lags])
    k = int(np.argmax(corr))
    if 0 < k < len(lags) - 1:
        denom = corr[k - 1] - 2 * corr[k] + corr[k + 1]
        return float(lags[k] + (0.5 * (corr[k - 1] - corr[k + 1]) / denom if denom else 0.0))
    return float(lags[k])


def truth_lag(times_s: np.ndarray, smooth: np.ndarray, truth, fps: float) -> float:
    """Frames by which `smooth` trails the ground truth: the shift s minimising
    RMS(smooth(t) - truth(t - s)), searched in 0.05-frame steps over -3..3."""
    shifts = np.arange(-3, 3.0001, 0.05)
    errors = [np.sqrt(np.mean((smooth - truth(times_s - s / fps)) ** 2)) for s in shifts]
    return float(shifts[int(np.argmin(errors))])


def measure(clip: Clip, config: TrackConfig) -> dict:
    index, raw, smooth = main_track(clip, config)
    times = clip.times_s[index]
    fps = (len(times) - 1) / (times[-1] - times[0])
    row = {"frames": len(clip.detections), "tracked": len(index),
           "raw_jitter_px": jitter(raw), "smooth_jitter_px": jitter(smooth)}
    row["jitter_ratio"] = row["smooth_jitter_px"] / row["raw_jitter_px"]
    if clip.reference is None:
        row["lag_frames"] = xcorr_lag(raw, smooth)
    else:
        truth = clip.truth(times)
        # a still face has no path to trail: every shift fits the same
        row["lag_frames"] = truth_lag(times, smooth, clip.truth, fps) if clip.moving else None
        row["raw_error_px"] = float(np.sqrt(np.mean(np.sum((raw - truth) ** 2, -1))))
        row["smooth_error_px"] = float(np.sqrt(np.mean(np.sum((smooth - truth) ** 2, -1))))
        row["truth_jitter_px"] = jitter(truth)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def load_clips(input_size: int) -> list[Clip]:
    retinaface = load_model(ModelStore(), BUNDLED_DETECTOR, "detector").module
    detector = FaceDetector(retinaface, "cpu", input_size=input_size)
    clips = [real_clip(name, detector) for name in REAL_CLIPS]
    return clips + [synthetic_clip(False, detector), synthetic_clip(True, detector)]


# --------------------------------------------------------------------------- report


def print_table(rows: dict[str, dict]) -> None:
    print(f"{'clip':18} {'frames':>6} {'raw jit':>8} {'smooth':>8} {'ratio':>6} "
          f"{'lag fr':>7} {'raw err':>8} {'sm err':>7}")
    for name, r in rows.items():
        print(f"{name:18} {r['tracked']:>6} {r['raw_jitter_px']:8.3f} "
              f"{r['smooth_jitter_px']:8.3f} {r['jitter_ratio']:6.3f} "
              f"{'-' if r['lag_frames'] is None else format(r['lag_frames'], '.2f'):>7} "
              f"{r.get('raw_error_px', float('nan')):8.3f} "
              f"{r.get('smooth_error_px', float('nan')):7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrackConfig()
    parser.add_argument("--min-cutoff-hz", type=float, default=defaults.min_cutoff_hz)
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--d-cutoff-hz", type=float, default=defaults.d_cutoff_hz)
    parser.add_argument("--input-size", type=int, default=640,
                        help="detector working size (640: the clips' own 512 px)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    config = dataclasses.replace(defaults, min_cutoff_hz=args.min_cutoff_hz, beta=args.beta,
                                 d_cutoff_hz=args.d_cutoff_hz)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = {clip.name: measure(clip, config) for clip in load_clips(args.input_size)}
    print_table(rows)
    for goal, met in goals(rows).items():
        print(f"{'met' if met else 'MISSED':6} {goal}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_result(rows, config, args.input_size), indent=2) + "\n")
        print(f"wrote {args.json}")


def _result(rows: dict, config: TrackConfig, input_size: int) -> dict:
    return {
        **run_info(),
        "detector": f"RetinaFace MobileNet-0.25 (bundled), input_size {input_size}",
        "filter": {"min_cutoff_hz": config.min_cutoff_hz, "beta": config.beta,
                   "d_cutoff_hz": config.d_cutoff_hz},
        "synthetic": {"fps": SYNTH_FPS, "face_px": SYNTH_FACE_PX,
                      "detector_noise_px": SYNTH_NOISE_PX, "pixel_noise": SYNTH_PIXEL_NOISE,
                      "path_amplitude_px": PATH_AMPLITUDE_PX, "path_period_s": PATH_PERIOD_S},
        "clips": rows,
        "goals": goals(rows),
    }


def goals(rows: dict[str, dict]) -> dict[str, bool]:
    """Jitter ratio at most 1/3 on the still clips, lag at most one frame on the moving."""
    out = {f"{name}: jitter_ratio <= 1/3": rows[name]["jitter_ratio"] <= 1 / 3
           for name in STILL_CLIPS}
    out.update({f"{name}: lag_frames <= 1": rows[name]["lag_frames"] <= 1
                for name in MOVING_CLIPS})
    return out


if __name__ == "__main__":
    main()
