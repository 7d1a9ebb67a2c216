"""Seconds a face for a face restorer (default: the bundled vidrestore-face-v1) at the
pipeline's crop size, and for the temporal steadying that follows it in a video.

Loads the model as a run does (model store, model factory, `FaceRestorer`) and times batches
of 512x512 faces on the CPU, after a warm-up, at each of `--threads` torch threads; median
of `--repeats` calls. `--random-official NAME` times a random-initialised file in NAME's
release layout instead (tests/model_files.py, tests/official_weights.py), for models whose
real weights cannot be had here (gfpgan-1.3, codeformer): the cost is the architecture's,
whatever the weights. Usage:
    python bench/face_restorer_speed.py [--json bench/results/face_restorer_speed_cpu.json]
    python bench/face_restorer_speed.py --random-official codeformer --threads 2 --faces 1 \
        --repeats 2 --fidelity 0.5 --json bench/results/codeformer_speed_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.run_info import device_info, run_info, write_json  # noqa: E402


def _random_codeformer(folder: Path) -> Path:
    from tests.model_files import codeformer_checkpoint

    return codeformer_checkpoint(folder / "codeformer.pth")


def _random_gfpgan(folder: Path) -> Path:
    from tests.model_files import gfpgan_checkpoint

    return gfpgan_checkpoint(folder / "GFPGANv1.3.pth")


RANDOM_FILES = {"codeformer": _random_codeformer, "gfpgan-1.3": _random_gfpgan}


def _temporal_seconds(faces: int, repeats: int) -> float:
    """Median seconds a face of the temporal steadying (flow on the host, warp and blend),
    the face path's step after the restorer, on two frames of a moving face."""
    import torch.nn.functional as F

    from vidrestore.config import FaceConfig
    from vidrestore.stages.face_temporal import FaceTemporal, flow_guides

    config = FaceConfig()
    stage = FaceTemporal(config.temporal_strength, config.temporal_threshold)
    face = F.interpolate(torch.rand(faces, 3, 64, 64), size=(512, 512), mode="bicubic")
    moved = torch.roll(face, 3, dims=3)
    before = flow_guides(face)  # the frame before's guides are kept from that frame

    def one_frame():  # what the stage does per frame: this frame's guides, flow, blend
        stage._blend(moved, flow_guides(moved), before, face)

    one_frame()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_frame()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) / faces, 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="vidrestore-face-v1",
                        help="registry name or weight file")
    parser.add_argument("--random-official", choices=sorted(RANDOM_FILES), metavar="NAME",
                        help="time a random file in this model's release layout")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--fidelity", type=float, default=1.0)
    args = parser.parse_args()

    from vidrestore.models import ModelStore
    from vidrestore.models.factory import load_model
    from vidrestore.stages.restore import FaceRestorer

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model = RANDOM_FILES[args.random_official](Path(tmp)) if args.random_official \
            else args.model
        loaded = load_model(ModelStore(), str(model), "face_restorer", cpu)
    resolved = loaded.resolved
    restorer = FaceRestorer(loaded.module, cpu, fidelity=args.fidelity)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for faces in args.faces:
            batch = torch.rand(faces, 3, 512, 512)
            restorer(batch)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                restorer(batch)
                times.append(time.perf_counter() - start)
            rows.append({"threads": threads, "faces_per_call": faces,
                         "s_per_face": round(statistics.median(times) / faces, 4),
                         "min_s_per_face": round(min(times) / faces, 4)})
            rows[-1]["temporal_s_per_face"] = _temporal_seconds(faces, args.repeats)
    name = f"{args.random_official} (random weights, release layout)" \
        if args.random_official else resolved.spec.name
    write_json({**run_info(), **device_info("cpu"), "model": name,
                "architecture": loaded.module.architecture.name,
                "sha256": resolved.spec.sha256, "crop": 512, "repeats": args.repeats,
                "fidelity": args.fidelity,
                "note": "2-core CPU shared with other jobs while measured; medians",
                "rows": rows}, args.json)


if __name__ == "__main__":
    main()
