"""Colour flicker of restored faces against their input, with the colour stage on and off.

Clips: every clip in ../shared/media/video is tracked (bundled RetinaFace at 640 px, the
pipeline's tracker); its main track's smoothed landmarks give the face's motion: the speed of
the landmarks' centre in eye distances per second. The clip whose face moves least gives the
still-face window, the one whose face moves most the moving-face window: the FRAMES-frame
stretch of that clip with the least (most) motion, re-encoded near-losslessly as the input.

Runs: the real pipeline (`vidrestore.run.restore`), --bg-model none (bicubic) --scale 2, x264
CRF 18, identity scoring off, no ParseNet (its weights are not here: the colour statistics
use the template face ellipse), with face.colour_strength 1 (colour stage on) and 0 (off):
  none         --face-model none: no face path, the bicubic upscale and the encoder alone
               (one run; measured over the passthrough run's landmarks);
  passthrough  the face path with faces unchanged;
  gfpgan       GFPGAN v1.3's network with RANDOM weights in the official file layout (the
               real weights cannot be downloaded on the machine this ran on): it paints
               noise, so its figures show what the colour stage does with an output far from
               the input, not what real GFPGAN does;
  jitter       passthrough plus a random colour shift of each face on each call, +-8% gain
               and +-0.03 offset per channel (what GFPGAN does to a face's colour from one
               frame to the next, exaggerated), to show the colour stage removes it.

Figures per run: flicker (vidrestore.metrics.colour_flicker: mean frame-to-frame CIE76 delta E
of the mean L*a*b* colour of the inner face, cheeks and nose from the smoothed landmarks) of
the output and of the input upscaled bicubically to the output size, over the same region (the
log's smoothed landmarks times the scale) and frames; and colour error, the mean delta E
between the output's and the input's face colour in the same frame. Goal: output flicker no
larger than the input's.

    python bench/colour_flicker.py [--frames 48] [--json bench/results/colour_flicker_cpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import landmark_jitter  # noqa: E402  (clip tracking helpers)

from bench.run_info import device_info, run_info  # noqa: E402
from tests.media import make_clip_of_images  # noqa: E402
from tests.model_files import gfpgan_checkpoint  # noqa: E402
from vidrestore import compose  # noqa: E402
from vidrestore.config import load_config  # noqa: E402
from vidrestore.metrics.colour_flicker import colour_flicker, face_colours  # noqa: E402
from vidrestore.models import ModelStore  # noqa: E402
from vidrestore.models.factory import BUNDLED_DETECTOR, load_model  # noqa: E402
from vidrestore.run import restore  # noqa: E402
from vidrestore.stages.detect import FaceDetector  # noqa: E402
from vidrestore.stages.restore import PassthroughRestorer  # noqa: E402
from vidrestore.stages.track import TrackConfig  # noqa: E402

CLIPS = ("talk_real_1", "talk_real_2", "talk_real_3", "face_synthetic_128")
SCALE = 2
JITTER_GAIN = 0.08  # +- per channel, per face and call
JITTER_OFFSET = 0.03  # +- per channel, in [0, 1] units
RESTORERS = ("passthrough", "none", "gfpgan", "jitter")
NOTE = ("GFPGAN runs use GFPGANv1Clean with random weights saved in the official file layout: "
        "the real GFPGANv1.3.pth could not be downloaded on this machine. Its output is noise "
        "shaped by the network, so those rows show the colour stage at work on an output far "
        "from the input, not real GFPGAN's flicker.")


# --------------------------------------------------------------------------- motion


def motion(clip: landmark_jitter.Clip) -> dict:
    """Motion of a clip's main track: per-frame landmark-centre speed in eye distances per
    second (NaN where the track is missing or just starts) and summary figures."""
    index, _raw, smooth = landmark_jitter.main_track(clip, TrackConfig())
    fps = (len(clip.times_s) - 1) / (clip.times_s[-1] - clip.times_s[0])
    centre = smooth.mean(axis=1)
    eyes = np.linalg.norm(smooth[:, 1] - smooth[:, 0], axis=1)
    speed = np.full(len(clip.detections), np.nan)
    follows = np.diff(index) == 1
    steps = np.linalg.norm(np.diff(centre, axis=0), axis=1) * fps / eyes[1:]
    speed[index[1:][follows]] = steps[follows]
    span = centre.max(0) - centre.min(0)
    return {"frames": len(clip.detections), "tracked": len(index),
            "eye_distance_px": round(float(np.median(eyes)), 1),
            "centre_span_px": [round(float(x), 1) for x in span],
            "speed_eyes_per_s_median": round(float(np.nanmedian(speed)), 3),
            "speed_eyes_per_s_p90": round(float(np.nanpercentile(speed, 90)), 3),
            "_speed": speed}


def window(speed: np.ndarray, frames: int, most: bool) -> int:
    """Start of the `frames`-frame stretch, fully tracked, with the most (least) motion."""
    means = np.array([speed[s + 1:s + frames].mean() for s in range(len(speed) - frames + 1)])
    means[np.isnan(means)] = -np.inf if most else np.inf
    return int(np.argmax(means) if most else np.argmin(means))


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# --------------------------------------------------------------------------- runs


class ColourJitter:
    """A restorer wrapper that shifts each face's colour at random on every call."""

    def __init__(self, inner, seed: int = 0):
        self.inner = inner
        self.fidelity = getattr(inner, "fidelity", 1.0)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        restored = self.inner(faces)
        k = len(restored)
        gain = 1 + (torch.rand(k, 3, 1, 1, generator=self.generator) * 2 - 1) * JITTER_GAIN
        offset = (torch.rand(k, 3, 1, 1, generator=self.generator) * 2 - 1) * JITTER_OFFSET
        return (restored * gain.to(restored) + offset.to(restored)).clamp(0, 1)


@contextlib.contextmanager
def jittering_passthrough():
    """`--face-model passthrough` builds a ColourJitter around the passthrough restorer."""
    original = compose.PassthroughRestorer
    compose.PassthroughRestorer = lambda: ColourJitter(PassthroughRestorer())
    try:
        yield
    finally:
        compose.PassthroughRestorer = original


def run_pipeline(src: Path, dst: Path, face_model: str, colour: bool, models: Path) -> dict:
    flags = {"scale": SCALE, "device": "cpu",
             "background": {"model": "none"},
             "face": {"model": face_model, "identity": False,
                      "colour_strength": 1.0 if colour else 0.0},
             "models": {"dir": str(models), "download": False}}
    return restore(src, dst, load_config("default", flags=flags), overwrite=True)


def main_track_landmarks(log: Path) -> list[np.ndarray | None] | None:
    """Per output frame, the smoothed (5, 2) landmarks of the most frequent restored track,
    in input pixels, or None."""
    records = [json.loads(line) for line in log.read_text().splitlines()][:-1]
    counts: dict[int, int] = {}
    for record in records:
        for face in record["faces"]:
            if face["skipped"] is None:
                counts[face["track"]] = counts.get(face["track"], 0) + 1
    if not counts:
        return None
    track = max(counts, key=counts.get)
    out = []
    for record in records:
        faces = [f for f in record["faces"] if f["track"] == track and f["skipped"] is None]
        out.append(np.array(faces[0]["landmarks"], dtype=np.float64) if faces else None)
    return out


def measure(src_frames: list[np.ndarray], out_path: Path,
            landmarks: list[np.ndarray | None]) -> dict:
    """Flicker of input and output over the inner face from `landmarks` (input pixels)."""
    outputs = decode(out_path)
    height, width = outputs[0].shape[:2]
    upscaled = [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC)
                for f in src_frames]
    marks = [None if m is None else m * SCALE for m in landmarks]
    colour_in = face_colours(upscaled, marks)
    colour_out = face_colours(outputs, marks)
    error = np.linalg.norm(colour_out - colour_in, axis=1)
    flicker_in, flicker_out = colour_flicker(colour_in), colour_flicker(colour_out)
    return {"input_flicker": flicker_in.as_dict(), "output_flicker": flicker_out.as_dict(),
            "flicker_ratio": round(flicker_out.delta_e / flicker_in.delta_e, 3),
            "colour_error_delta_e": round(float(np.nanmean(error)), 3),
            "frames_with_face": int((~np.isnan(error)).sum()),
            "goal_met": bool(flicker_out.delta_e <= flicker_in.delta_e)}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--media", type=Path, default=landmark_jitter.MEDIA)
    parser.add_argument("--restorers", nargs="+", choices=RESTORERS, default=list(RESTORERS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    landmark_jitter.MEDIA = args.media  # its clip reader looks there

    retinaface = load_model(ModelStore(), BUNDLED_DETECTOR, "detector").module
    detector = FaceDetector(retinaface, "cpu", input_size=640)
    clips = {}
    for name in CLIPS:
        clips[name] = motion(landmark_jitter.real_clip(name, detector))
        print(f"{name:20} tracked {clips[name]['tracked']}/{clips[name]['frames']}  "
              f"speed median {clips[name]['speed_eyes_per_s_median']:.2f}  "
              f"p90 {clips[name]['speed_eyes_per_s_p90']:.2f} eye distances/s")
    usable = [n for n in CLIPS if clips[n]["tracked"] >= args.frames]
    ranked = sorted(usable, key=lambda n: clips[n]["speed_eyes_per_s_median"])
    chosen = {"still": ranked[0], "moving": ranked[-1]}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gfpgan = gfpgan_checkpoint(work / "GFPGANv1.3.pth")
        for kind, name in chosen.items():
            speed = clips[name]["_speed"]
            start = window(speed, args.frames, most=kind == "moving")
            frames = decode(args.media / "video" / f"{name}.mp4")[start:start + args.frames]
            src = make_clip_of_images(work / f"{kind}.mp4", frames)
            src_frames = decode(src)
            chosen[kind] = {"clip": name, "start_frame": start, "frames": args.frames,
                            "speed_eyes_per_s_mean": round(float(
                                np.nanmean(speed[start + 1:start + args.frames])), 3)}
            landmarks = None  # from the first run with a face path: the same in every run
            for restorer in args.restorers:
                for colour in (True,) if restorer == "none" else (True, False):
                    out = work / f"{kind}_{restorer}_{colour}.mp4"
                    model = {"gfpgan": str(gfpgan), "none": "none"}.get(restorer,
                                                                        "passthrough")
                    started = time.perf_counter()
                    with jittering_passthrough() if restorer == "jitter" else \
                            contextlib.nullcontext():
                        run_pipeline(src, out, model, colour, work / "models")
                    landmarks = landmarks or main_track_landmarks(out.with_name(
                        out.name + ".jsonl"))
                    if landmarks is None:
                        raise SystemExit(f"{name}: no face was restored; run passthrough "
                                         "before none")
                    row = {"face": kind, "clip": name, "restorer": restorer,
                           "colour_stage": ("on" if colour else "off") if restorer != "none"
                           else "-",
                           **measure(src_frames, out, landmarks),
                           "wall_s": round(time.perf_counter() - started, 1)}
                    rows.append(row)
                    print_row(row)
    for name in clips:
        clips[name].pop("_speed")
    print(NOTE)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {**run_info(), **device_info("cpu"),
                  "note": NOTE,
                  "settings": {"frames": args.frames, "scale": SCALE, "background": "bicubic",
                               "encode": "libx264 CRF 18 medium", "colour_history": 1,
                               "detector": "RetinaFace MobileNet-0.25 (bundled), 640 px",
                               "jitter": {"gain": JITTER_GAIN, "offset": JITTER_OFFSET},
                               "colour_space": "CIE L*a*b* (D65), CIE76 delta E",
                               "region": "inner face: eyes-to-mouth quadrilateral inset 25%"},
                  "clips": clips, "chosen": chosen, "runs": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def print_row(row: dict) -> None:
    print(f"{row['face']:7} {row['clip']:18} {row['restorer']:12} colour {row['colour_stage']:3}"
          f"  flicker in {row['input_flicker']['delta_e']:6.3f}"
          f"  out {row['output_flicker']['delta_e']:6.3f}"
          f"  ratio {row['flicker_ratio']:6.2f}"
          f"  colour error {row['colour_error_delta_e']:6.2f}"
          f"  {'met' if row['goal_met'] else 'MISSED'}  ({row['wall_s']} s)", flush=True)


if __name__ == "__main__":
    main()
