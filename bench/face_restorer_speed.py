"""Seconds a face for the bundled restorer (vidrestore-face-v1) at the pipeline's crop size.

Loads the model as a run does (model store, safe loader, `FaceRestorer`) and times batches
of 512x512 faces on the CPU, after a warm-up, at 1 and at 2 torch threads; median of
`--repeats` calls. Usage:
    python bench/face_restorer_speed.py [--json bench/results/face_restorer_speed_cpu.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.run_info import device_info, run_info, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="vidrestore-face-v1")
    args = parser.parse_args()

    from vidrestore.models import ModelStore, load_image_model
    from vidrestore.stages.restore import FaceRestorer

    cpu = torch.device("cpu")
    resolved = ModelStore().locate(args.model)
    restorer = FaceRestorer(load_image_model(resolved, cpu), cpu)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for faces in (1, 4):
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
    write_json({**run_info(), **device_info("cpu"), "model": resolved.spec.name,
                "sha256": resolved.spec.sha256, "crop": 512, "repeats": args.repeats,
                "note": "2-core CPU shared with other jobs while measured; medians",
                "rows": rows}, args.json)


if __name__ == "__main__":
    main()
