"""What the pipeline machinery costs, and whether memory stays flat with length.

For a 1280x720 clip with `--bg-model none --face-model none --scale 1` this measures:
  - decode+encode alone: the same decoder and encoder, one after the other, no threads;
  - the full pipeline: decode thread, batching, device upload/download, encode thread;
and the peak resident memory of the pipeline on a short clip and on one 4x longer.
Each measurement runs in its own process so peak memory is that run's own.

    python bench/pipeline_overhead.py [--frames 120] [--json bench/results/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_info import run_info, write_json  # noqa: E402


def decode_encode_only(src: Path, dst: Path) -> dict:
    from vidrestore.config import load_config
    from vidrestore.io.decode import read_frames
    from vidrestore.io.encode import open_writer
    from vidrestore.io.plan import plan_output
    from vidrestore.io.probe import probe

    cfg = load_config(flags={"scale": 1})
    info = probe(src)
    plan = plan_output(info, dst, 1, cfg.encode)
    started = time.perf_counter()
    writer = open_writer(dst, plan, info, cfg.encode)
    frames = 0
    for frame in read_frames(info, writer.add_side, plan.reencode_indices):
        writer.write(frame.image, frame)
        frames += 1
    writer.close()
    return {"frames": frames, "seconds": time.perf_counter() - started}


def pipeline(src: Path, dst: Path) -> dict:
    from vidrestore.config import load_config
    from vidrestore.run import restore

    cfg = load_config(flags={"scale": 1, "background": {"model": "none"},
                             "face": {"model": "none"}, "device": "cpu"})
    started = time.perf_counter()
    summary = restore(src, dst, cfg, overwrite=True)
    return {"frames": summary["frames_out"], "seconds": time.perf_counter() - started,
            "mean_ms_per_frame": summary["mean_ms_per_frame"]}


def _child(mode: str, src: str, dst: str) -> None:
    from vidrestore.memory import settle_process

    settle_process()  # as the CLI does
    import vidrestore.io.encode  # noqa: F401 - imports (torch's most of all) are not
    import vidrestore.run  # noqa: F401 - part of what is measured, for either mode
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = (decode_encode_only if mode == "baseline" else pipeline)(Path(src), Path(dst))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    # CPU seconds of the run alone (imports excluded), all threads, x264's included.
    result["cpu_s"] = (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps(result))


def _run_child(mode: str, src: Path, work: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(src),
                          str(work / f"out-{mode}-{src.stem}.mp4")],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["fps"] = result["frames"] / result["seconds"]
    result["cpu_ms_per_frame"] = 1000 * result["cpu_s"] / result["frames"]
    return result


def _interleaved(src: Path, work: Path, repeats: int) -> tuple[list[dict], list[dict]]:
    """Baseline and pipeline runs taken in turns, so both see the same machine noise."""
    base, pipe = [], []
    for _ in range(repeats):
        base.append(_run_child("baseline", src, work))
        pipe.append(_run_child("pipeline", src, work))
    return base, pipe


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "DST"))
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    from tests.media import make_long_clip

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        short = make_long_clip(work / "short.mp4", args.frames, audio="aac")
        long = make_long_clip(work / "long.mp4", 4 * args.frames, audio="aac")
        base, pipe = _interleaved(short, work, args.repeats)
        longer = [_run_child("pipeline", long, work) for _ in range(2)]
    wall_overhead = [b["fps"] / p["fps"] - 1 for b, p in zip(base, pipe, strict=True)]
    cpu_overhead = [p["cpu_ms_per_frame"] / b["cpu_ms_per_frame"] - 1
                    for b, p in zip(base, pipe, strict=True)]
    info = run_info()
    result = {
        "date": info["date"],
        "commit": info["commit"],
        "machine": info["machine"] + ", CPU only",
        "clip": f"1280x720 libx264, {args.frames} and {4 * args.frames} frames, aac audio",
        "settings": "--bg-model none --face-model none --scale 1 --device cpu, x264 crf 18 "
                    f"medium; {args.repeats} interleaved pairs, each run in its own process",
        "decode_encode_fps": round(_median([b["fps"] for b in base]), 2),
        "pipeline_fps": round(_median([p["fps"] for p in pipe]), 2),
        "wall_overhead_pct": round(100 * _median(wall_overhead), 1),
        "cpu_ms_per_frame": {
            "decode_encode": round(_median([b["cpu_ms_per_frame"] for b in base]), 2),
            "pipeline": round(_median([p["cpu_ms_per_frame"] for p in pipe]), 2)},
        "cpu_overhead_pct": round(100 * _median(cpu_overhead), 1),
        "pipeline_ms_per_frame": pipe[-1]["mean_ms_per_frame"],
        "peak_rss_mb": {"decode_encode": round(max(b["peak_rss_mb"] for b in base)),
                        "pipeline_short": round(max(p["peak_rss_mb"] for p in pipe)),
                        "pipeline_4x_longer": round(max(p["peak_rss_mb"] for p in longer))},
    }
    write_json(result, args.json)


if __name__ == "__main__":
    main()
