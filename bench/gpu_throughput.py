"""Throughput of the real pipeline on a GPU (or the CPU), per stage and end to end, with the
peer side by side on the same frames and weight files.

Configurations, each run through `vidrestore.run.restore` on a clip made here (one real face
moving a little over a blurred photo, `tests.media.make_face_clip`):

  hq       1280x720, GFPGAN v1.3 + RealESRGAN_x2plus, --scale 2 -> 2560x1440
  general  1280x720, GFPGAN v1.3 + realesr-general-x4v3, --scale 2 -> 2560x1440
  fast     640x480, the fast preset (general-x4v3, detection at 480 px, x264 veryfast),
           --scale 2 -> 1280x960

Weights are random-initialised in the official file layouts (tests/official_weights.py), in a
model store of their own; the face detector is RetinaFace MobileNet-0.25 with real weights in
every configuration (random detector weights find no face), and identity scoring is off
(dlib, on the CPU). ParseNet paste masks are on, as with real weights.

Figures per configuration, each run in a fresh process:
  fps: frames written per second after the first batch, so model loading, compilation and
    the pipeline filling up are left out (`startup_s` says how long those took);
  ms_per_frame: mean of each stage's time per frame from the per-frame log, after the first
    batch (decode and encode run in their own threads, overlapped with the device work);
  peak device memory (torch.cuda.max_memory_allocated) and peak resident memory for the clip
    and for one `--long-frames` long: bounded by the batch size when the two agree;
  with --peer, the peer (bench/peer/run_peer.py in bench/peer/.venv) on the clip's first
    `--peer-frames` frames with the same weight files, and ours over its fps.

    python bench/gpu_throughput.py --device cuda --frames 240 --long-frames 960 \\
        --batch-size 8 --peer --json bench/results/gpu_throughput_h100.json

`--json` merges into an existing file by configuration, and `--merge A.json B.json --json C`
joins files, so configurations can be measured in separate calls (a GPU machine's commands
are limited to 10 minutes each; see bench/gpu_session.sh and bench/gpu_run.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_info import device_info, run_info  # noqa: E402

MEDIA = Path(os.environ.get("VIDRESTORE_TEST_MEDIA", ROOT.parent / "shared" / "media"))
FACE_IMAGES = ("gfpgan_cropped_faces_Adele_crop.png", "gfpgan_whole_imgs_10045.png")
PEER_PYTHON = ROOT / "bench" / "peer" / ".venv" / "bin" / "python"
CONFIGS = {
    "hq": {"size": (1280, 720), "preset": "default", "bg_model": "realesrgan-x2plus",
           "peer_bg": "RealESRGAN_x2plus",
           "what": "1280x720 -> 2560x1440, GFPGAN v1.3 + RealESRGAN_x2plus"},
    "general": {"size": (1280, 720), "preset": "default", "bg_model": "realesr-general-x4v3",
                "peer_bg": "realesr-general-x4v3",
                "what": "1280x720 -> 2560x1440, GFPGAN v1.3 + realesr-general-x4v3 at --scale 2"},
    "fast": {"size": (640, 480), "preset": "fast", "bg_model": None,
             "peer_bg": "realesr-general-x4v3",
             "what": "640x480 -> 1280x960, fast preset (general-x4v3, detection at 480 px)"},
}
TOP_LEVEL_DEVICE_STAGES = ("upload", "background", "faces", "download")


# --- one measured run, in a child process ---------------------------------------------------


def run_config_flags(name: str, args) -> dict:
    """The config layers of a configuration: flags over its preset, as the CLI merges them."""
    spec = CONFIGS[name]
    compile_mode = args.compile_mode if args.compile else None
    return {
        "device": args.device, "scale": 2, "batch_size": args.batch_size,
        "background": {"model": spec["bg_model"], "compile": compile_mode,
                       "tile": args.tile},
        "face": {"model": "gfpgan-1.3", "detector": "retinaface-mobilenet0.25",
                 "identity": False, "parse": True, "compile": compile_mode},
        "decode": {"hwaccel": args.hwdecode},
        "encode": {"threads": args.encode_threads},
        "models": {"download": False, "strict": True},
    }


def measure(spec: dict) -> dict:
    """Restore `spec["clip"]` once; the figures of that run."""
    from vidrestore.memory import settle_process

    settle_process()  # as the CLI does, before torch is imported
    import torch

    from tests.official_weights import bench_store
    from vidrestore.config import load_config, preset_path
    from vidrestore.run import restore

    cfg = load_config("default", preset_path(spec["preset"]), spec["flags"])
    store = bench_store(Path(spec["weights"]))
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    written: list[float] = []
    started = time.perf_counter()
    out, log = Path(spec["output"]), Path(spec["output"] + ".jsonl")
    summary = restore(spec["clip"], out, cfg, log_path=log, overwrite=True, store=store,
                      progress=lambda done, total: written.append(time.perf_counter()))
    wall_s = time.perf_counter() - started
    records = [json.loads(line) for line in log.read_text().splitlines()][:-1]
    batch = cfg.batch_size
    result = {
        "frames": len(records), "batch_size": batch, "wall_s": round(wall_s, 3),
        **steady_fps(written, batch, started),
        "ms_per_frame": stage_means(records[batch:] or records),
        "faces_per_frame": round(statistics.mean(len(r["faces"]) for r in records), 3),
        "faces_restored": sum(f["skipped"] is None for r in records for f in r["faces"]),
        "size_out": summary["size_out"], "decoder": summary["decoder"],
        "models": {role: {k: m[k] for k in ("name", "source", "dtype", "channels_last",
                                            "compile") if k in m}
                   for role, m in summary["models"].items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_memory_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                               if cuda else None),
        "peak_gpu_reserved_mb": (round(torch.cuda.max_memory_reserved() / 2**20, 1)
                                 if cuda else None),
        "warnings": summary["warnings"],
    }
    out.unlink(missing_ok=True)
    return result


def steady_fps(written: list[float], batch: int, started: float) -> dict:
    """Frames per second after the first batch was written; with one batch or less, over
    the whole run (then `steady` is false)."""
    if len(written) > batch:
        span = written[-1] - written[batch - 1]
        return {"fps": round((len(written) - batch) / span, 4), "steady": True,
                "startup_s": round(written[batch - 1] - started, 3)}
    return {"fps": round(len(written) / (written[-1] - started), 4), "steady": False,
            "startup_s": None}


def stage_means(records: list[dict]) -> dict[str, float]:
    """Mean ms per frame of every timing in the log, plus `device` (the worker's own stages
    summed: what bounds fps when decode and encode keep up)."""
    keys = sorted({k for r in records for k in r["timings_ms"]})
    means = {k: round(statistics.mean(r["timings_ms"].get(k, 0.0) for r in records), 3)
             for k in keys}
    means["device"] = round(sum(means.get(k, 0.0) for k in TOP_LEVEL_DEVICE_STAGES), 3)
    return means


def _child(spec_json: str) -> None:
    print(json.dumps(measure(json.loads(spec_json))))


def run_child(spec: dict, timeout_s: float) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode:
        raise SystemExit(f"measurement failed ({spec['clip']}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the peer ---------------------------------------------------------------------------------


def run_peer(name: str, clip: Path, args, work: Path) -> dict:
    python = Path(args.peer_python)
    if not python.exists():
        raise SystemExit(f"{python} is missing: run bench/peer/setup_peer.sh first")
    out = work / f"peer-{name}.json"
    command = [str(python), str(ROOT / "bench" / "peer" / "run_peer.py"), "--input", str(clip),
               "--weights", str(args.weights), "--bg-model", CONFIGS[name]["peer_bg"],
               "--outscale", "2", "--frames", str(args.peer_frames), "--device",
               args.device, "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode:
        raise SystemExit(f"the peer failed on {name}:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


# --- the whole benchmark ----------------------------------------------------------------------


def frames_for(requested: int, batch: int) -> int:
    """`requested` rounded up to whole batches (a short last batch is a new shape to a
    compiled model) and to at least two batches (the first is not timed)."""
    return max(2, math.ceil(requested / batch)) * batch


def batch_size_of(name: str, args) -> int:
    if args.batch_size:
        return args.batch_size
    from vidrestore.config import load_config, preset_path

    return load_config("default", preset_path(CONFIGS[name]["preset"]), {}).batch_size


def clip_for(name: str, frames: int, args) -> Path:
    from tests.media import make_face_clip

    width, height = CONFIGS[name]["size"]
    path = args.work / f"face_{width}x{height}_{frames}.mp4"
    if not path.is_file():
        make_face_clip(path, args.media, frames, width=width, height=height)
    return path


def measure_config(name: str, args, work: Path) -> dict:
    batch = batch_size_of(name, args)
    lengths = {"short": frames_for(args.frames, batch)}
    if args.long_frames:
        lengths["long"] = frames_for(args.long_frames, batch)
    runs = {}
    for label, frames in lengths.items():
        clip = clip_for(name, frames, args)
        spec = {"clip": str(clip), "output": str(work / f"out-{name}-{label}.mp4"),
                "weights": str(args.weights), "preset": CONFIGS[name]["preset"],
                "flags": run_config_flags(name, args)}
        print(f"[{name}] {label}: {frames} frames, batch {batch} ...", file=sys.stderr,
              flush=True)
        runs[label] = run_child(spec, args.timeout)
        print(f"[{name}] {label}: {runs[label]['fps']} fps", file=sys.stderr, flush=True)
    result = {"what": CONFIGS[name]["what"], "ours": runs}
    if args.peer:
        print(f"[{name}] peer: {args.peer_frames} frames ...", file=sys.stderr, flush=True)
        peer = run_peer(name, clip_for(name, lengths["short"], args), args, work)
        result["peer"] = peer
        result["speedup_vs_peer"] = round(runs["short"]["fps"] / peer["fps"], 2)
        print(f"[{name}] peer: {peer['fps']} fps", file=sys.stderr, flush=True)
    return result


def merge(older: dict, newer: dict) -> dict:
    """`newer`'s configurations over `older`'s; refused across devices."""
    if older.get("device") != newer["device"]:
        raise SystemExit(f"cannot merge figures from {older.get('device')} with figures "
                         f"from {newer['device']}")
    return {**newer, "configs": {**older.get("configs", {}), **newer["configs"]}}


def merge_files(paths: list[Path]) -> dict:
    """One result from several calls' files (each one configuration, say), in order;
    each configuration keeps the commit and settings it was measured with."""
    results = [json.loads(p.read_text()) for p in paths]
    for result in results:
        for figures in result["configs"].values():
            figures.setdefault("commit", result["commit"])
            figures.setdefault("settings", result["settings"])
    merged = results[0]
    for result in results[1:]:
        merged = merge(merged, result)
    return merged


def table(result: dict) -> str:
    gpu = result["device"] != "CPU only"
    lines = [f"| configuration | fps | device ms/frame | background | faces | peak "
             f"{'GPU' if gpu else 'resident'} MB (short / long) | peer fps | x peer |",
             "|" + " --- |" * 8]
    for name, figures in result["configs"].items():
        short, long = figures["ours"]["short"], figures["ours"].get("long", {})
        stages = short["ms_per_frame"]
        key = "peak_gpu_memory_mb" if gpu else "peak_rss_mb"
        memory = " / ".join(str(r.get(key)) for r in (short, long) if r)
        peer = figures.get("peer", {})
        lines.append(f"| {name} | {short['fps']} | {stages['device']} | "
                     f"{stages.get('background')} | {stages.get('faces')} | {memory} | "
                     f"{peer.get('fps', '-')} | {figures.get('speedup_vs_peer', '-')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--configs", default="hq,general,fast",
                        help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--frames", type=int, default=240, help="frames of the timed clip")
    parser.add_argument("--long-frames", type=int, default=None,
                        help="frames of the second clip, for memory (default 4x; 0: skip)")
    parser.add_argument("--batch-size", type=int, help="frames per batch (default: preset's)")
    parser.add_argument("--tile", type=int, help="background tile (default: automatic)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode with --compile (default, reduce-overhead, "
                             "max-autotune, max-autotune-no-cudagraphs)")
    parser.add_argument("--hwdecode", choices=["none", "auto", "cuda"], default="none")
    parser.add_argument("--encode-threads", type=int, default=0, help="0: x264's choice")
    parser.add_argument("--peer", action="store_true", help="run the peer side by side")
    parser.add_argument("--peer-frames", type=int, default=None,
                        help="frames the peer restores (default: min(--frames, 60))")
    parser.add_argument("--peer-python", default=str(PEER_PYTHON))
    parser.add_argument("--media", type=Path, default=MEDIA,
                        help=f"folder with images/{FACE_IMAGES[0]} and images/{FACE_IMAGES[1]}")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "gpu_throughput",
                        help="weights and clips, kept between calls")
    parser.add_argument("--timeout", type=float, default=3600, help="per process, seconds")
    parser.add_argument("--label", default="", help="a note stored with the figures")
    parser.add_argument("--json", type=Path, help="write (merge) the figures here")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                        help="only merge these result files (from separate calls) into --json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    if args.merge:
        result = merge_files(args.merge)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(table(result))
        return
    missing = [n for n in FACE_IMAGES if not (args.media / "images" / n).is_file()]
    if missing:
        parser.error(f"{args.media}/images lacks {missing}; pass --media")
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    if args.long_frames is None:
        args.long_frames = 4 * args.frames
    if args.peer_frames is None:
        args.peer_frames = min(args.frames, 60)
    args.peer_frames = max(args.peer_frames, 2)

    from tests.official_weights import write_weights

    info = run_info()  # the checkout as the measurement starts
    args.work.mkdir(parents=True, exist_ok=True)
    args.weights = write_weights(args.work / "weights")
    configs = {name: measure_config(name, args, args.work) for name in names}
    result = {**info, **device_info(args.device), "label": args.label,
              "settings": {k: v for k, v in vars(args).items()
                           if k not in ("child", "json", "work", "weights", "peer_python",
                                        "media")},
              "configs": configs}
    if args.json:
        if args.json.is_file():
            result = merge(merge_files([args.json]), result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
