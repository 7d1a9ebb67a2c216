"""dlib's ResNet face descriptor (dlib_face_recognition_resnet_model_v1) in PyTorch.

The network of dlib's `dnn_face_recognition_ex.cpp`, with the weights read from the `.dat`
file in `face-recognition-models` (no download), differentiable, so a restorer can be trained
with an identity loss offline:

    input   150x150 RGB chip, (x - channel mean) / 256 (dlib's input_rgb_image_sized)
    stem    con 32 7x7 /2 (no padding), affine, relu, max_pool 3x3 /2 (no padding)
    levels  3 x res(32); res_down(64) + 3 x res(64); res_down(128) + 2 x res(128);
            res_down(256) + 2 x res(256); res_down(256)
    head    mean over space, fc 256 -> 128 without bias

A block is con 3x3 -> affine -> relu -> con 3x3 -> affine; `res` adds its input, `res_down`
strides the first con by 2 (no padding) and adds its input average-pooled 2x2 /2. dlib's
`add_prev` adds tensors of different shapes by zero-padding both to the larger one,
top-left aligned (more channels, and at 8 -> 3 vs 4 px, a larger map): `_add_padded` does
the same. Affine layers are dlib's frozen batch norms: gamma * x + beta per channel.

The `.dat` file is dlib's own serialisation: integers as one header byte (low nibble: byte
count, bit 7: sign) and little-endian magnitude bytes; floats as mantissa and base-2 exponent
integers; strings as a length and bytes; tensors as version, four dims and the values as raw
little-endian float32.
Layers appear from the input outwards; only con, affine, fc and the input's channel means
carry numbers, and they are read in that order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError

CHIP_SIZE = 150
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def int(self) -> int:
        head = self.data[self.pos]
        size, negative = head & 0x0F, bool(head & 0x80)
        raw = self.data[self.pos + 1:self.pos + 1 + size]
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if negative else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos:self.pos + size].decode("ascii")
        self.pos += size
        return text

    def find(self, name: str) -> None:
        """Move past the next serialised string `name`."""
        token = bytes([0x01, len(name)]) + name.encode()
        at = self.data.find(token, self.pos)
        if at < 0:
            raise ModelError(f"dlib model: no {name!r} layer where one was expected")
        self.pos = at + len(token)

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ModelError(f"dlib model: tensor version {version}, expected 2")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        values = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += 4 * count
        return values


def read_dlib_resnet(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of `DlibResNet` from dlib_face_recognition_resnet_model_v1.dat."""
    reader = _Reader(Path(path).read_bytes())
    reader.find("input_rgb_image_sized")
    means = [reader.float() for _ in range(3)]
    state: dict[str, torch.Tensor] = {"mean": torch.tensor(means).view(1, 3, 1, 1)}
    convs = ["stem"] + [f"blocks.{b}.{c}" for b in range(sum(n for _, n, _ in LEVELS))
                        for c in ("conv1", "conv2")]
    widths = [32] + [w for w, n, _ in LEVELS for _ in range(2 * n)]
    in_ch = 3
    for name, width in zip(convs, widths, strict=True):
        reader.find("con_4")
        params = reader.tensor()
        filters, rows, cols = reader.int(), reader.int(), reader.int()
        k = (params.size - filters) // (filters * rows * cols)
        if filters != width or k != in_ch:
            raise ModelError(f"dlib model: {name} is {k}->{filters}, expected {in_ch}->{width}")
        state[f"{name}.weight"] = torch.from_numpy(
            params[:filters * k * rows * cols].reshape(filters, k, rows, cols).copy())
        state[f"{name}.bias"] = torch.from_numpy(params[-filters:].copy())
        reader.find("affine_")
        affine = reader.tensor()
        bn = name.replace("conv", "bn") if name != "stem" else "stem_bn"
        state[f"{bn}.weight"] = torch.from_numpy(affine[:filters].copy())
        state[f"{bn}.bias"] = torch.from_numpy(affine[filters:].copy())
        in_ch = width
    reader.find("fc_2")
    outputs, inputs = reader.int(), reader.int()
    weights = reader.tensor()
    if (inputs, outputs) != (256, 128) or weights.size != 256 * 128:
        raise ModelError(f"dlib model: fc is {inputs}->{outputs}, expected 256->128")
    state["fc.weight"] = torch.from_numpy(weights.reshape(256, 128).T.copy())
    return state


class _Affine(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride, pad = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, pad)
        self.bn1 = _Affine(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.bn2 = _Affine(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, skip))


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, each input zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    shape = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return pad(a) + pad(b)


class DlibResNet(nn.Module):
    """chips (N, 3, 150, 150) float RGB in [0, 1] -> (N, 128) raw dlib descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_bn = _Affine(32)
        blocks, in_ch = [], 32
        for width, count, down in LEVELS:
            for i in range(count):
                blocks.append(_Block(in_ch, width, down and i == 0))
                in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips * 255 - self.mean) / 256
        x = F.max_pool2d(F.relu(self.stem_bn(self.stem(x))), 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean((2, 3)))


def load_dlib_resnet(path: str | Path) -> DlibResNet:
    """The descriptor network from its `.dat` file, eval mode, gradients off for its own
    weights (the model factory's role `identity_net` calls it with the bundled file)."""
    model = DlibResNet()
    model.load_state_dict(read_dlib_resnet(path), strict=True)
    return model.eval().requires_grad_(False)
