"""The shipped face restorer against passthrough faces on held-out clips, through the CLI.

For each clip: its first `--frames` frames are the reference (x264 at crf 0); a degradation
drawn from the training "video" preset (`frame_recipe`, seeded per clip) makes the input;
`vidrestore IN OUT --bg-model none` runs twice, with the model and with `--face-model
passthrough` (the same plain background), and each output is scored against the reference:

    face PSNR / SSIM   over each reference face's box (RetinaFace on the reference, the
                       box grown by 20 %), output resized to the reference size (area)
    identity           dlib cosine between reference and output faces, at the reference's
                       landmarks
    flicker            `vidrestore eval`'s RMS warping error (8-bit levels) of the output

Usage: python bench/face_restorer_eval.py [--json bench/results/face_restorer_eval.json]
       [--grid docs/face_restorer_eval.png] [--frames 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.run_info import ROOT, run_info, write_json  # noqa: E402

MEDIA = Path(os.environ.get("VIDRESTORE_TEST_MEDIA") or ROOT.parent / "shared" / "media")
CLIPS = {"val": ["liveportrait_d10.mp4", "liveportrait_d18.mp4"],
         "generalisation": ["retalking_1.mp4", "retalking_3.mp4"]}
CLIPS = {g: [c for c in clips if not os.environ.get("EVAL_CLIPS") or c in os.environ["EVAL_CLIPS"]]
         for g, clips in CLIPS.items()}


def trim(src: Path, dst: Path, frames: int) -> Path:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=stream_in.average_rate or 25)
        stream.width, stream.height = stream_in.width // 2 * 2, stream_in.height // 2 * 2
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "0", "preset": "veryfast"}
        for i, frame in enumerate(inp.decode(stream_in)):
            if i >= frames:
                break
            rgb = frame.to_ndarray(format="rgb24")[:stream.height, :stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def restore(src: Path, dst: Path, face_model: str, env: dict, config: str | None = None,
            reuse: bool = False) -> dict:
    log = dst.with_name(dst.name + ".jsonl")
    if not (reuse and log.exists()):
        cmd = [sys.executable, "-m", "vidrestore", str(src), str(dst), "--face-model",
               face_model, "--bg-model", "none", "--no-download", "--quiet", "--overwrite"]
        subprocess.run(cmd + (["--config", config] if config else []), check=True, env=env)
    summary = json.loads(log.read_text().splitlines()[-1])["summary"]
    assert summary["failed_frames"] == 0, summary
    return summary


def face_figures(ref_frames, out_frames, detector, encoder) -> dict:
    from vidrestore.metrics.identity import LandmarkedFace, cosine
    from vidrestore.metrics.quality import psnr, ssim

    psnrs, ssims, ids, crops = [], [], [], []
    for ref, out in zip(ref_frames, out_frames, strict=True):
        out = cv2.resize(out, ref.shape[1::-1], interpolation=cv2.INTER_AREA)
        found = detector(torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255)[0]
        for k in range(len(found)):
            if float(found.scores[k]) < 0.9:
                continue
            x1, y1, x2, y2 = found.boxes[k].tolist()
            cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.6 * max(x2 - x1, y2 - y1)
            box = [int(max(0, cx - half)), int(max(0, cy - half)),
                   int(min(ref.shape[1], cx + half)), int(min(ref.shape[0], cy + half))]
            a = torch.from_numpy(ref[box[1]:box[3], box[0]:box[2]]).permute(2, 0, 1)[None] / 255
            b = torch.from_numpy(out[box[1]:box[3], box[0]:box[2]]).permute(2, 0, 1)[None] / 255
            psnrs.append(float(psnr(b, a)[0]))
            ssims.append(float(ssim(b, a)[0]))
            marks = found.landmarks[k].double().numpy()
            emb = encoder.embed([LandmarkedFace(ref, marks), LandmarkedFace(out, marks)])
            ids.append(float(cosine(emb[0], emb[1])))
            if not crops:
                crops.append(out[box[1]:box[3], box[0]:box[2]])
    return {"face_psnr": round(float(np.mean(psnrs)), 3),
            "face_ssim": round(float(np.mean(ssims)), 4),
            "identity": round(float(np.mean(ids)), 4), "faces": len(psnrs)}, crops


def flicker(ref: Path, out: Path) -> float | None:
    from vidrestore.config import load_config
    from vidrestore.evaluate import evaluate, open_measures

    cfg = load_config(flags={"models": {"download": False}})
    measures = open_measures(cfg, torch.device("cpu"), identity=False, lpips=False)
    result = evaluate(ref, out, measures)
    f = result["means"]["flicker"]
    return {"restored": f["restored"], "reference": f["reference"], "added": f["added"],
            "frame_psnr": result["means"]["psnr"], "frame_ssim": result["means"]["ssim"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--model", default="vidrestore-face-v1")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--config", help="restore config (YAML) for the model's runs")
    parser.add_argument("--reuse-passthrough", action="store_true",
                        help="keep the passthrough outputs already in --work")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from vidrestore.degrade import degrade
    from vidrestore.metrics.identity import open_identity_encoder
    from vidrestore.models import ModelStore
    from vidrestore.models.factory import BUNDLED_DETECTOR, load_model
    from vidrestore.stages.detect import FaceDetector
    from vidrestore.train.degradation import frame_recipe, get_preset

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    store = ModelStore()
    detector = FaceDetector(load_model(store, BUNDLED_DETECTOR, "detector").module, "cpu")
    encoder = open_identity_encoder(store, "dlib")
    work = args.work or Path(tempfile.mkdtemp(prefix="face_eval_"))
    work.mkdir(parents=True, exist_ok=True)
    rows, tiles = [], []
    for group, clips in CLIPS.items():
        for name in clips:
            stem = Path(name).stem
            ref = trim(MEDIA / "clean" / "video" / name, work / f"{stem}_ref.mp4", args.frames)
            seed = 100 + sum(name.encode()) % 900  # one degradation per clip, on every run
            steps = frame_recipe(get_preset("video"), seed)
            saved = work / f"{stem}_deg.json"
            if args.reuse_passthrough and saved.exists():  # the input the outputs were made of
                record = json.loads(saved.read_text())
            else:
                record = degrade(ref, work / f"{stem}_deg.mp4", seed=seed, steps=steps,
                                 overwrite=True)
                saved.write_text(json.dumps(record, default=str))
            row = {"group": group, "clip": name, "frames": args.frames,
                   "degradation": record["steps"]}
            ref_frames = frames_of(ref)
            for label, model in (("model", args.model), ("passthrough", "passthrough")):
                out = work / f"{stem}_{label}.mp4"
                summary = restore(work / f"{stem}_deg.mp4", out, model, env,
                                  args.config if label == "model" else None,
                                  args.reuse_passthrough and label == "passthrough")
                figures, crops = face_figures(ref_frames, frames_of(out), detector, encoder)
                row[label] = {**figures, "flicker": flicker(ref, out),
                              "face_model": summary["models"]["face"]["name"]}
                if label == "model":
                    model_crop = crops[0]
                else:
                    pass_crop = crops[0]
            row["gain_db"] = round(row["model"]["face_psnr"] - row["passthrough"]["face_psnr"], 3)
            rows.append(row)
            tiles.append((name, pass_crop, model_crop, ref_frames[0]))
            print(json.dumps(row), file=sys.stderr)
    if args.grid:
        save_grid(tiles, rows, detector, args.grid)
    write_json({**run_info(), "model": args.model, "background": "none (plain bicubic) for both",
                "rows": rows}, args.json)


def save_grid(tiles, rows, detector, path: Path) -> None:
    """Per clip, frame 0's face: degraded input through passthrough | model | reference."""
    import matplotlib
    from matplotlib.figure import Figure

    from vidrestore.report import STYLE, _image_axes, _save

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.5, 1.6 * len(tiles)), layout="constrained")
        axes = fig.subplots(len(tiles), 3, squeeze=False)
        for r, ((name, passthrough, model, ref), row) in enumerate(zip(tiles, rows, strict=True)):
            h, w = model.shape[:2]
            found = detector(torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255)[0]
            x1, y1, x2, y2 = found.boxes[0].tolist()
            cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.6 * max(x2 - x1, y2 - y1)
            box = [int(max(0, cx - half)), int(max(0, cy - half)),
                   int(min(ref.shape[1], cx + half)), int(min(ref.shape[0], cy + half))]
            clean = ref[box[1]:box[3], box[0]:box[2]]
            for c, (image, title) in enumerate((
                    (passthrough, f"passthrough {row['passthrough']['face_psnr']:.2f} dB"),
                    (model, f"model {row['model']['face_psnr']:.2f} dB"),
                    (clean, f"reference ({name.removesuffix('.mp4')})"))):
                axes[r, c].imshow(image)
                _image_axes(axes[r, c], title)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(fig, path)


if __name__ == "__main__":
    main()
