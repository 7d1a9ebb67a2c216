"""ParseNet face parser (19 CelebAMask-HQ classes), inference only.

The network comes from PSFR-GAN (Chen et al., "Progressive Semantic-Aware Style
Transformation for Blind Face Restoration", CVPR 2021) in the configuration facexlib ships as
`parsing_parsenet.pth`: `ParseNet(in_size=512, out_size=512, parsing_ch=19)`, i.e. base width
64, channels clipped to 32..256, 4 downsampling residual blocks (512 -> 32 px), 10 residual
blocks at 32 px with a skip around them, 4 upsampling residual blocks, and two 3x3 heads: the
parsing logits and an auxiliary RGB image. Every conv is 3x3 with reflection padding; a conv
followed by BatchNorm has no bias; activations are LeakyReLU(0.2). Module names follow
facexlib's, so the official state dict loads unchanged (strict):

    encoder.0.conv2d.*                     3 -> 64 stem (no norm, no activation)
    encoder.1-4.{shortcut_func,conv1,conv2}.*    downsampling residual blocks
    body.0-9.{conv1,conv2}.*               residual blocks (identity shortcut, no keys)
    decoder.0-3.{shortcut_func,conv1,conv2}.*    upsampling residual blocks
    out_mask_conv.conv2d.*, out_img_conv.conv2d.*
    (a normalised conv is `conv2d.weight` + `norm.norm.{weight,bias,running_*}`)

Input: (N, 3, H, W) RGB scaled to [-1, 1] (pixels in 0..1, minus `INPUT_MEAN`, over
`INPUT_STD`), H and W multiples of 16; the weights were trained on 512x512 FFHQ-aligned faces.
`ParseNet.parse` returns the (N, 19, H, W) logits; `face_mask_from_parsing` turns them into
the paste-back mask facexlib's FaceRestoreHelper uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ...errors import ModelError
from ..reader import read_state_dict

INPUT_MEAN = (0.5, 0.5, 0.5)  # RGB, on pixels scaled to 0..1
INPUT_STD = (0.5, 0.5, 0.5)
SIZE_MULTIPLE = 16  # four stride-2 stages; other sizes would not come back to H x W

# Class order of the PSFR-GAN / facexlib ParseNet labels (CelebAMask-HQ's 19 classes). Note
# this differs from BiSeNet's order (there 1..13 end at l_lip and 14 is neck).
CLASS_NAMES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
# facexlib's MASK_COLORMAP [0, 255 x 13, 0, 255, 0, 0, 0] / 255: everything from skin to hair
# plus earrings counts as face; background, hat, necklace, neck and cloth do not.
FACE_CLASSES = tuple(range(1, 14)) + (15,)
_FACE_TABLE = tuple(float(c in FACE_CLASSES) for c in range(len(CLASS_NAMES)))


class NormLayer(nn.Module):
    """BatchNorm held as `.norm`, so its keys read `norm.norm.*` as in the official file."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """[nearest 2x up] -> reflection-padded 3x3 conv (stride 2 for 'down') -> [BN] -> [act]."""

    def __init__(self, cin: int, cout: int, scale: str = "none", norm: bool = False,
                 act: bool = False):
        super().__init__()
        if scale not in ("none", "up", "down"):
            raise ValueError(f"scale must be 'none', 'up' or 'down', not {scale!r}")
        self.upsample = scale == "up"
        self.conv2d = nn.Conv2d(cin, cout, 3, stride=2 if scale == "down" else 1, padding=1,
                                padding_mode="reflect", bias=not norm)
        self.norm = NormLayer(cout) if norm else nn.Identity()
        self.relu = nn.LeakyReLU(0.2, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.relu(self.norm(self.conv2d(x)))


class ResidualBlock(nn.Module):
    """conv1 (BN, LeakyReLU) -> conv2 (BN) plus a shortcut; 'down' strides in conv2, 'up'
    upsamples before conv1. The shortcut is a plain conv when the shape changes."""

    def __init__(self, cin: int, cout: int, scale: str = "none"):
        super().__init__()
        self.shortcut_func = (nn.Identity() if scale == "none" and cin == cout
                              else ConvLayer(cin, cout, scale))
        self.conv1 = ConvLayer(cin, cout, "up" if scale == "up" else "none", norm=True, act=True)
        self.conv2 = ConvLayer(cout, cout, "down" if scale == "down" else "none", norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """facexlib's ParseNet(in_size=512, out_size=512, parsing_ch=19) with its key names."""

    def __init__(self, parsing_ch: int = 19, base_ch: int = 64, res_depth: int = 10,
                 steps: int = 4, ch_range: tuple[int, int] = (32, 256)):
        super().__init__()

        def clip(ch: int) -> int:
            return max(ch_range[0], min(ch, ch_range[1]))

        head = base_ch
        encoder: list[nn.Module] = [ConvLayer(3, base_ch)]
        for _ in range(steps):
            encoder.append(ResidualBlock(clip(head), clip(head * 2), "down"))
            head *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*(ResidualBlock(clip(head), clip(head))
                                    for _ in range(res_depth)))
        decoder = []
        for _ in range(steps):
            decoder.append(ResidualBlock(clip(head), clip(head // 2), "up"))
            head //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(head), 3)
        self.out_mask_conv = ConvLayer(clip(head), parsing_ch)
        self.size_multiple = 2 ** steps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder output (N, 64, H, W) shared by both heads."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ParseNet takes (N, 3, H, W) images, got {tuple(x.shape)}")
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f"ParseNet needs H and W multiples of {self.size_multiple}, got "
                             f"{tuple(x.shape[-2:])}; resize the faces (the weights expect 512)")
        feat = self.encoder(x)
        return self.decoder(feat + self.body(feat))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As facexlib: (parsing logits (N, 19, H, W), auxiliary RGB image (N, 3, H, W))."""
        feat = self.features(x)
        return self.out_mask_conv(feat), self.out_img_conv(feat)

    def parse(self, faces: torch.Tensor) -> torch.Tensor:
        """faces: (N, 3, H, W) float RGB in [-1, 1], H and W multiples of 16 (512 is what the
        weights were trained on), on the model's device and dtype.

        Returns the parsing logits (N, 19, H, W) in the same dtype; classes as `CLASS_NAMES`.
        Skips the auxiliary image head. Batch items are independent (eval-mode BatchNorm).
        """
        return self.out_mask_conv(self.features(faces))


def face_mask_from_parsing(logits: torch.Tensor) -> torch.Tensor:
    """(N, 19, H, W) parsing logits -> (N, 1, H, W) float32 mask, 1 where the most likely class
    is in `FACE_CLASSES` and 0 elsewhere (facexlib's MASK_COLORMAP / 255, before its blur).

    Runs on the logits' device, over the whole batch at once.
    """
    if logits.ndim != 4 or logits.shape[1] != len(CLASS_NAMES):
        raise ValueError(f"expected parsing logits (N, {len(CLASS_NAMES)}, H, W), "
                         f"got {tuple(logits.shape)}")
    table = torch.tensor(_FACE_TABLE, dtype=torch.float32, device=logits.device)
    return table[logits.argmax(dim=1, keepdim=True)]


def fuse_batchnorm(model: ParseNet) -> ParseNet:
    """Fold each BatchNorm into the conv before it, in place; for inference only.

    After this the state dict no longer has the official keys, so fuse after loading.
    """
    for layer in model.modules():
        if isinstance(layer, ConvLayer) and isinstance(layer.norm, NormLayer):
            layer.conv2d = fuse_conv_bn_eval(layer.conv2d.eval(), layer.norm.norm.eval())
            layer.norm = nn.Identity()
    return model


# --------------------------------------------------------------------------- loading

_WRAPPERS = ("params_ema", "params", "state_dict")


def parsenet_from_state_dict(state_dict: Mapping[str, object]) -> ParseNet:
    """Build the official 512-px ParseNet and load `state_dict` into it strictly, in eval mode.

    Takes the plain state dict facexlib saves, or one wrapped in {'params_ema'|'params'|
    'state_dict': ...}, with or without DataParallel's `module.` prefix. BatchNorm's
    `num_batches_tracked` counters may be absent. Any mismatch raises a one-line ModelError.
    Gradients are off; the model is on the CPU in float32.
    """
    sd = _unwrap(state_dict)
    with torch.device("meta"):  # shapes only: the weights replace the parameters below
        model = ParseNet()
    expected = model.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked"):
            sd.setdefault(key, torch.tensor(0))
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ModelError(f"ParseNet weights do not fit: {len(missing)} missing keys "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}; "
                         "expected facexlib's parsing_parsenet.pth")
    bad = next(((k, tuple(v.shape), tuple(expected[k].shape)) for k, v in sd.items()
                if v.shape != expected[k].shape), None)
    if bad:
        raise ModelError(f"ParseNet weights do not fit: {bad[0]} has shape {bad[1]}, "
                         f"expected {bad[2]}; expected facexlib's parsing_parsenet.pth")
    # Own float32 copies (the caller's tensors stay untouched, half-precision files widen).
    sd = {k: v.to(torch.float32 if expected[k].is_floating_point() else v.dtype, copy=True)
          for k, v in sd.items()}
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["load_state_dict failed"])[-1].strip()
        raise ModelError(f"ParseNet weights do not fit: {first}") from exc
    return model.eval().requires_grad_(False)


def load_parsenet(path: str | os.PathLike[str]) -> ParseNet:
    """Load a ParseNet checkpoint (.pth) through the one safe reader, on the CPU; move it to
    the device afterwards. Every failure is a one-line ModelError."""
    state = read_state_dict(path, what="ParseNet", advice="delete it and run `vidrestore "
                            "models download parsenet` (facexlib's parsing_parsenet.pth)")
    try:
        return parsenet_from_state_dict(state)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def _unwrap(obj: Mapping[str, object]) -> dict[str, torch.Tensor]:
    for key in _WRAPPERS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError("not a ParseNet state dict: expected a mapping of parameter names to "
                         "tensors (facexlib's parsing_parsenet.pth)")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}  # type: ignore[misc]



def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
