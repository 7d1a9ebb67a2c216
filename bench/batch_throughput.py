"""Batch throughput against running the files one after another, and what segmenting one
clip costs (warm-up frames and the join).

Clips: made here (tests/media.py): FILES clips of FRAMES frames at 320x240 with AAC audio,
and, for segments, one face clip (a real face, tests.media.make_face_clip) of SEG_FRAMES
frames at 320x240 with a keyframe every 25 frames. Settings: the fast preset,
--face-model passthrough (the whole face path: detection, tracking, alignment, paste-back,
with faces unchanged), --bg-model none, --scale 2, no downloads.

Runs, each timed from the command line (process start and model loading included):
  sequential     `vidrestore IN OUT` for each file, one after another
  batch local    `vidrestore batch IN... -o OUT --jobs J` (J worker processes)
  batch ray      `vidrestore batch ... --ray auto --jobs J` (a local Ray started by it)
  single         the face clip in one run
  segments       the face clip with `batch --segments S --jobs 1` (segments one after
                 another: the overhead alone) and `--jobs J` (segments at once)

    python bench/batch_throughput.py [--files 4] [--frames 60] [--jobs 2] [--segments 3]
                                     [--json bench/results/batch_throughput_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media import make_clip, make_face_clip  # noqa: E402

MEDIA = Path(os.environ.get("VIDRESTORE_TEST_MEDIA") or ROOT.parent / "shared" / "media")
OPTIONS = ["--config", "fast", "--face-model", "passthrough", "--bg-model", "none",
           "--scale", "2", "--no-download", "--quiet"]


def vidrestore(*args: str | Path, env: dict[str, str]) -> float:
    """Run the CLI; return its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidrestore", *map(str, args)], check=True,
                   env=env, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--seg-frames", type=int, default=150)
    parser.add_argument("--warmup-frames", type=int, default=16)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch_bench_"))
    env = {**os.environ, "VIDRESTORE_HOME": str(work / "models"),
           "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    inputs = work / "in"
    inputs.mkdir()
    clips = [make_clip(inputs / f"clip{i}.mp4", width=320, height=240, frames=args.frames,
                       audio="aac") for i in range(args.files)]
    frames = args.files * args.frames
    figures: dict[str, dict] = {}
    load_before = os.getloadavg()[0]

    seq_dir = work / "sequential"
    seq_dir.mkdir()
    seq_s = sum(vidrestore(clip, seq_dir / clip.name, *OPTIONS, env=env) for clip in clips)
    figures["sequential"] = {"wall_s": round(seq_s, 2), "fps": round(frames / seq_s, 2)}
    local_s = vidrestore("batch", inputs, "-o", work / "local", "--jobs", args.jobs,
                         *OPTIONS, env=env)
    figures["batch_local"] = {"jobs": args.jobs, "wall_s": round(local_s, 2),
                              "fps": round(frames / local_s, 2),
                              "speedup": round(seq_s / local_s, 2)}
    if not args.no_ray:
        ray_s = vidrestore("batch", inputs, "-o", work / "ray", "--ray", "auto", "--jobs",
                           args.jobs, *OPTIONS, env=env)
        figures["batch_ray"] = {"jobs": args.jobs, "wall_s": round(ray_s, 2),
                                "fps": round(frames / ray_s, 2),
                                "speedup": round(seq_s / ray_s, 2)}
        rerun_s = vidrestore("batch", inputs, "-o", work / "ray", "--ray", "auto", *OPTIONS,
                             env=env)
        figures["batch_ray_rerun_all_skipped"] = {"wall_s": round(rerun_s, 2)}

    face_dir = work / "face"
    face_dir.mkdir()
    face = make_face_clip(face_dir / "face.mp4", MEDIA, args.seg_frames, width=320,
                          height=240, gop=25)
    single_s = vidrestore(face, work / "single.mp4", *OPTIONS, env=env)
    figures["single"] = {"frames": args.seg_frames, "wall_s": round(single_s, 2)}
    for jobs in (1, args.jobs):
        out = work / f"segments_jobs{jobs}"
        wall = vidrestore("batch", face_dir, "-o", out, "--segments", args.segments,
                          "--warmup-frames", args.warmup_frames, "--jobs", jobs, *OPTIONS,
                          env=env)
        summary = json.loads((out / "face.mp4.jsonl").read_text().splitlines()[-1])["summary"]
        segs = summary["segments"]
        figures[f"segments_jobs{jobs}"] = {
            "segments": len(segs), "wall_s": round(wall, 2),
            "overhead_vs_single": round(wall / single_s - 1, 3),
            "warmup_frames": sum(s["warmup_frames"] for s in segs),
            "warmup_share": round(sum(s["warmup_frames"] for s in segs) / args.seg_frames, 3),
            "join_s": summary["join_s"],
            "tracks": len(summary["faces"]["tracks"]),
            "segment_wall_s": [s["wall_s"] for s in segs]}
    result = {"machine": "2-core x86 CPU, no GPU (shared)",
              "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "files": args.files,
              "frames_per_file": args.frames, "size": "320x240 -> 640x480",
              "options": " ".join(OPTIONS), "figures": figures}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
