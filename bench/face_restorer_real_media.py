"""The bundled restorer on real degraded media, next to the input and passthrough faces.

Runs `vidrestore IN OUT --bg-model none` with the model and with `--face-model passthrough`
on the old photos of ../shared/media/images and on one frame of each talk_real clip, then
draws, per face found, input | passthrough | model crops in one grid (500 DPI). No ground
truth exists for these: the grid is for looking, the figures printed are the model's change
(mean absolute difference from passthrough, 8-bit levels) and sharpness of both.

Usage: python bench/face_restorer_real_media.py --grid docs/face_restorer_real_media.png
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

from bench.run_info import ROOT  # noqa: E402

MEDIA = Path(os.environ.get("VIDRESTORE_TEST_MEDIA") or ROOT.parent / "shared" / "media")
IMAGES = ["gfpgan_whole_imgs_00.jpg", "gfpgan_whole_imgs_10045.png",
          "gfpgan_whole_imgs_Blake_Lively.jpg", "codeformer_whole_imgs_00.jpg",
          "codeformer_whole_imgs_01.jpg", "gfpgan_cropped_faces_Adele_crop.png"]
CLIPS = ["talk_real_1.mp4", "talk_real_2.mp4", "talk_real_3.mp4"]


def frame_png(clip: Path, index: int, out: Path) -> Path:
    with av.open(str(clip)) as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            if i == index:
                cv2.imwrite(str(out), cv2.cvtColor(frame.to_ndarray(format="rgb24"),
                                                   cv2.COLOR_RGB2BGR))
                return out
    raise ValueError(clip)


def run(src: Path, dst: Path, model: str, env: dict) -> dict:
    subprocess.run([sys.executable, "-m", "vidrestore", str(src), str(dst), "--face-model", model,
                    "--bg-model", "none", "--scale", "1", "--no-download", "--quiet",
                    "--overwrite"], check=True, env=env)
    lines = dst.with_name(dst.name + ".jsonl").read_text().splitlines()
    summary = json.loads(lines[-1])["summary"]
    assert summary["failed_frames"] == 0
    return json.loads(lines[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", type=Path, required=True)
    parser.add_argument("--model", default="vidrestore-face-v1")
    parser.add_argument("--max-faces", type=int, default=12)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="real_media_"))
    inputs = [MEDIA / "images" / n for n in IMAGES]
    inputs += [frame_png(MEDIA / "video" / c, 60, work / f"{Path(c).stem}_f60.png") for c in CLIPS]
    tiles = []
    for src in inputs:
        outs = {}
        for label, model in (("passthrough", "passthrough"), ("model", args.model)):
            dst = work / f"{src.stem}_{label}.png"
            record = run(src, dst, model, env)
            outs[label] = cv2.cvtColor(cv2.imread(str(dst)), cv2.COLOR_BGR2RGB)
        image = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
        for face in record["faces"]:
            if face.get("skipped"):
                continue
            x1, y1, x2, y2 = face["box"]
            cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.65 * max(x2 - x1, y2 - y1)
            box = [int(max(0, cx - half)), int(max(0, cy - half)),
                   int(min(image.shape[1], cx + half)), int(min(image.shape[0], cy + half))]
            crop = [a[box[1]:box[3], box[0]:box[2]] for a in
                    (image, outs["passthrough"], outs["model"])]
            change = float(np.abs(crop[2].astype(float) - crop[1]).mean())
            sharp = [float(cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
                     for c in crop[1:]]
            tiles.append((src.name, crop, change, sharp))
            print(f"{src.name}: face {box}: change {change:.2f}, sharpness passthrough "
                  f"{sharp[0]:.1f} model {sharp[1]:.1f}")
    tiles = sorted(tiles, key=lambda t: -t[1][0].shape[0])[:args.max_faces]
    save(tiles, args.grid)


def save(tiles, path: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    from vidrestore.report import STYLE, _image_axes, _save

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.5, 1.5 * len(tiles)), layout="constrained")
        axes = fig.subplots(len(tiles), 3, squeeze=False)
        for r, (name, crops, change, sharp) in enumerate(tiles):
            notes = (name.rsplit(".", 1)[0], f"sharpness {sharp[0]:.0f}",
                     f"sharpness {sharp[1]:.0f}, change {change:.1f}")
            for c, (crop, title, note) in enumerate(zip(crops, ("input", "passthrough",
                                                                 "model"), notes, strict=True)):
                axes[r, c].imshow(crop)
                _image_axes(axes[r, c], title if r == 0 else "")
                axes[r, c].text(0.5, -0.03, note, transform=axes[r, c].transAxes,
                                ha="center", va="top", fontsize=5)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(fig, path)


if __name__ == "__main__":
    main()
