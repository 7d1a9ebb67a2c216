"""Random-initialised model files in the official layouts, and a registry that accepts them.

The real files cannot be downloaded here; these have the same container, names and tensor
layout, so they go through the same store checks and loaders as the real ones would:

- `random_buffalo_l`: a zip like insightface's buffalo_l.zip, whose w600k_r50.onnx is a small
  random CNN with the recogniser's interface (one input `input.1`, (N, 3, 112, 112) with a
  dynamic batch axis; one output `683`, (N, 512)), plus a stand-in detector file beside it.
- `random_alexnet_trunk`: torchvision's AlexNet state dict, saved as alexnet-owt-7be5be79.pth is.
- `registry_accepting`: the real registry with those files' sizes and digests in place of the
  published ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vidrestore.models.registry import REGISTRY, FileDigest, ModelSpec, build_registry

ARCFACE_INPUT, ARCFACE_OUTPUT = "input.1", "683"  # the names in the real w600k_r50.onnx


def random_arcface_onnx(seed: int = 0) -> bytes:
    """Three stride-2 convs with PReLU, then a dense layer to 512: spatial layout matters to
    it, as it does to the real network, so misaligned faces embed differently."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights, channels, previous = [], [], 3, ARCFACE_INPUT
    for i, width in enumerate((8, 16, 16)):
        w = rng.normal(0, np.sqrt(2 / (9 * channels)), (width, channels, 3, 3))
        slope = np.full((width, 1, 1), 0.25)
        weights += [numpy_helper.from_array(w.astype(np.float32), f"conv{i}.weight"),
                    numpy_helper.from_array(slope.astype(np.float32), f"prelu{i}.slope")]
        nodes += [helper.make_node("Conv", [previous, f"conv{i}.weight"], [f"c{i}"],
                                   kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("PRelu", [f"c{i}", f"prelu{i}.slope"], [f"p{i}"])]
        channels, previous = width, f"p{i}"
    dense = rng.normal(0, np.sqrt(1 / (channels * 14 * 14)), (512, channels * 14 * 14))
    weights.append(numpy_helper.from_array(dense.astype(np.float32), "fc.weight"))
    nodes += [helper.make_node("Flatten", [previous], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "fc.weight"], [ARCFACE_OUTPUT], transB=1)]
    graph = helper.make_graph(
        nodes, "random_arcface",
        [helper.make_tensor_value_info(ARCFACE_INPUT, TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info(ARCFACE_OUTPUT, TensorProto.FLOAT, ["None", 512])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    onnx.checker.check_model(model)
    return model.SerializeToString()


def random_buffalo_l(path: Path, seed: int = 0) -> Path:
    """buffalo_l.zip's layout: the recogniser and the other models side by side at the top."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("det_10g.onnx", b"not used by vidrestore")
        archive.writestr("w600k_r50.onnx", random_arcface_onnx(seed))
    return path


def random_alexnet_trunk(path: Path, seed: int = 0) -> Path:
    """A random torchvision AlexNet saved as a plain state dict, as alexnet-owt-7be5be79.pth
    is (features.* and classifier.*)."""
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry_accepting(**files: Path) -> Mapping[str, ModelSpec]:
    """REGISTRY with the given model names' size and SHA-256 taken from these files (and,
    for zips, from their members of the registered names)."""
    specs = dict(REGISTRY)
    for name, path in files.items():
        spec, data = specs[name], path.read_bytes()
        members = spec.members
        if members:
            with zipfile.ZipFile(path) as archive:
                members = tuple(FileDigest(m.filename, digest(archive.read(m.filename)),
                                           archive.getinfo(m.filename).file_size)
                                for m in members)
        specs[name] = dataclasses.replace(spec, sha256=digest(data), size_bytes=len(data),
                                          members=members)
    return build_registry(*specs.values())
