"""Cost of the per-face metrics on this machine: identity (ArcFace, dlib) and LPIPS.

Run: python bench/face_metrics_speed.py [--repeats 5]

Speed does not depend on the weights, so the networks here are random: ArcFace is an
IResNet-50 laid out as insightface's arcface_torch `iresnet50` (the network inside buffalo_l's
w600k_r50.onnx: 3x3 stem, [3, 4, 14, 3] IBasicBlocks, 512-D), exported to ONNX with a dynamic
batch axis and run by `ArcFaceEncoder`; LPIPS runs the real AlexNet layout on random trunk
weights. Inputs are what the face stage gives: 512 px aligned crops with their template
landmarks (identity), and face boxes resampled to 256 px (LPIPS). Each figure is the median of
the repeats, in ms per face. Results go to bench/results/face_metrics_speed.json.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_info import run_info, write_json  # noqa: E402
from tests.model_files import random_alexnet_trunk  # noqa: E402
from vidrestore.metrics.arcface import ArcFaceEncoder  # noqa: E402
from vidrestore.metrics.identity import LandmarkedFace, open_identity_encoder  # noqa: E402
from vidrestore.metrics.perceptual import Lpips  # noqa: E402
from vidrestore.models import ModelStore  # noqa: E402
from vidrestore.models.factory import load_model  # noqa: E402
from vidrestore.stages.align import face_template  # noqa: E402


class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(inplanes), nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes), nn.PReLU(planes),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes))
        self.downsample = None if stride == 1 and inplanes == planes else nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        return self.body(x) + (x if self.downsample is None else self.downsample(x))


def iresnet50() -> nn.Module:
    layers, inplanes = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                        nn.PReLU(64)], 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 14, 3), strict=True):
        for i in range(blocks):
            layers.append(IBasicBlock(inplanes, planes, 2 if i == 0 else 1))
            inplanes = planes
    layers += [nn.BatchNorm2d(512), nn.Flatten(), nn.Linear(512 * 7 * 7, 512),
               nn.BatchNorm1d(512)]
    return nn.Sequential(*layers).eval()


def iresnet50_onnx() -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(iresnet50(), torch.rand(1, 3, 112, 112), buffer,
                          input_names=["input.1"], output_names=["embedding"],
                          dynamic_axes={"input.1": {0: "batch"}}, dynamo=False)
    return buffer.getvalue()


def median_ms(call, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (all threads of this process) milliseconds of `call`. On a shared
    machine the wall time swings with the neighbours' load; the CPU time much less."""
    call()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return float(np.median(wall)), float(np.median(cpu))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    crop = face_template(512).numpy()
    faces = [LandmarkedFace(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), crop)
             for _ in range(8)]
    store = ModelStore()
    dlib = open_identity_encoder(store, "dlib")
    with tempfile.TemporaryDirectory() as tmp:  # both random networks go through the factory
        onnx = Path(tmp) / "iresnet50.onnx"
        onnx.write_bytes(iresnet50_onnx())
        arcface = ArcFaceEncoder(load_model(store, str(onnx), "identity").module)
        trunk = random_alexnet_trunk(Path(tmp) / "alexnet-owt-7be5be79.pth")
        lpips = Lpips(load_model(store, str(trunk), "lpips").module)
    calls = {"arcface": lambda k: arcface.embed(faces[:k]),
             "dlib": lambda k: dlib.embed(faces[:k]),
             "lpips_256": lambda k: lpips(pairs[0][:k], pairs[1][:k])}
    pairs = torch.rand(2, 8, 3, 256, 256)
    results: dict[str, dict[str, dict[str, float]]] = {
        "wall_ms": {name: {} for name in calls}, "cpu_ms": {name: {} for name in calls}}
    for name, call in calls.items():
        for k in (1, 4, 8):
            wall, cpu = median_ms(lambda call=call, k=k: call(k), args.repeats)
            results["wall_ms"][name][f"{k} a call"] = round(wall / k, 1)
            results["cpu_ms"][name][f"{k} a call"] = round(cpu / k, 1)
    record = {**run_info(), "torch_threads": torch.get_num_threads(),
              "load_average_1min": round(os.getloadavg()[0], 2),
              "unit": "ms per face (wall; CPU over all threads), medians of the repeats, "
                      "by faces per call",
              "repeats": args.repeats, "results": results}
    write_json(record, ROOT / "bench" / "results" / "face_metrics_speed.json")


if __name__ == "__main__":
    main()
