"""Random-initialised model files in the official layouts, and a registry that accepts them.

The real files cannot be downloaded here; these have the same container, names and tensor
layout, so they go through the same store checks and loaders as the real ones would:

- `random_buffalo_l`: a zip like insightface's buffalo_l.zip, whose w600k_r50.onnx is a small
  random CNN with the recogniser's interface (one input `input.1`, (N, 3, 112, 112) with a
  dynamic batch axis; one output `683`, (N, 512)), plus a stand-in detector file beside it.
- `random_alexnet_trunk`: torchvision's AlexNet state dict, saved as alexnet-owt-7be5be79.pth is.
- `registry_accepting`: the real registry with those files' sizes and digests in place of the
  published ones.
- `restoreformer_pp_checkpoint`, `gfpgan_checkpoint`, `codeformer_checkpoint`: random
  RestoreFormer++, GFPGAN and CodeFormer files written as the releases are.

Plain functions, no pytest: each writes one file to the path it is given and returns the path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vidrestore.models.arch.restoreformer import CHECKPOINT_PREFIX, RestoreFormerPlusPlus
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

# Official RestoreFormer++ sizes; width 32 keeps every key of the release (the same levels,
# blocks, attention layers and 1x1 shortcuts) at a quarter of the compute.
RFPP_FULL = {}
RFPP_SMALL = {"width": 32, "z_channels": 64, "codes": 64, "code_dim": 32}


def restoreformer_pp_checkpoint(path: Path, *, seed: int = 0, **sizes) -> Path:
    """A random RestoreFormer++ written as the release `RestoreFormer++.ckpt` is laid out.

    The release file (294,028,815 bytes) holds the network's 73,472,579 float32 tensors
    under 'state_dict', each key prefixed 'vqvae.', in a dict of its own (a module's
    state_dict() would carry a `_metadata` attribute, about 17 kB of pickle the file has no
    room for), beside about 40 to 100 bytes of other top-level pickle: room for the three scalars
    of a weights-only Lightning checkpoint written here, and for nothing bigger (optimizer
    states, callbacks, hyper-parameters, training-only loss modules). Its exact size also
    fits a zip written through an in-memory buffer ('archive/' record prefix), which is how
    Lightning saves: so is this one.

    `sizes` are `RestoreFormerPlusPlus` arguments (RFPP_SMALL for a fast model with every
    key of the release). Codes are drawn from N(0, 1), so that different positions pick
    different codes.
    """
    torch.manual_seed(seed)
    net = RestoreFormerPlusPlus(**sizes)
    with torch.no_grad():
        net.quantize.embedding.weight.normal_()
    state = {CHECKPOINT_PREFIX + key: value for key, value in net.state_dict().items()}
    checkpoint = {"epoch": 105, "global_step": 4_000_000, "pytorch-lightning_version": "1.0.8",
                  "state_dict": state}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def gfpgan_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """A random GFPGANv1Clean saved as GFPGANv1.3.pth is ({'params_ema': state_dict}), with
    the decoder's noise strengths set (see `tests.official_weights.gfpgan_v13`)."""
    from tests.official_weights import gfpgan_v13

    torch.manual_seed(seed)
    torch.save(gfpgan_v13(), path)
    return path


def codeformer_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """A random CodeFormer (the release's sizes: 512-d, 9 layers, 1024 codes, connections at
    32-256 px) saved as codeformer.pth is, {'params_ema': state_dict}, through
    spandrel-extra-arches' module, whose keys are the official ones. The codebook is drawn
    from N(0, 1), so different positions pick different codes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    net = CodeFormer()
    with torch.no_grad():
        net.quantize.embedding.weight.normal_()
        net.position_emb.normal_(0, 0.02)
    torch.save({"params_ema": net.state_dict()}, path)
    return path
