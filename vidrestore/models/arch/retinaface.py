"""RetinaFace face detector with MobileNet-0.25 or ResNet-50 backbone, inference only.

The network is the one described in Deng et al., "RetinaFace: Single-stage Dense Face
Localisation in the Wild" (CVPR 2020), in the variant trained by biubug6/Pytorch_Retinaface:
a backbone giving features at strides 8, 16 and 32, a three-level FPN, an SSH context module
per level and, per level, 1x1 heads predicting for 2 anchors per cell a face score, a box and
five landmarks. Module and parameter names follow that project's checkpoints (the files
facexlib ships as `detection_mobilenet0.25_Final.pth` and `detection_Resnet50_Final.pth`),
so their state dicts load unchanged:

    body.*            backbone (MobileNetV1 x0.25 stage1-3, or torchvision's ResNet-50)
    fpn.output1-3.*   lateral 1x1 convs; fpn.merge1-2.* 3x3 convs after top-down addition
    ssh1-3.*          context modules
    ClassHead|BboxHead|LandmarkHead.{0,1,2}.conv1x1.*

The network expects BGR pixels in 0..255 minus `MEAN_BGR` (the Caffe convention it was
trained with); `vidrestore.stages.detect` does that conversion.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import Bottleneck

from ...errors import ModelError
from ..reader import read_state_dict

MEAN_BGR = (104.0, 117.0, 123.0)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))  # pixels of the network input, per level
VARIANCES = (0.1, 0.2)  # scale of the centre and of the log-size offsets in the encoding
LANDMARKS = 5  # left eye, right eye, nose tip, left mouth corner, right mouth corner


@dataclass(frozen=True)
class RetinaFaceConfig:
    backbone: str
    in_channels: tuple[int, int, int]  # channels of the backbone's three outputs
    out_channels: int  # width of the FPN, the SSH modules and the heads' input
    leaky: float  # negative slope in FPN and SSH (the narrow net uses 0.1, ResNet plain ReLU)


CONFIGS = {
    "mobilenet0.25": RetinaFaceConfig("mobilenet0.25", (64, 128, 256), 64, 0.1),
    "resnet50": RetinaFaceConfig("resnet50", (512, 1024, 2048), 256, 0.0),
}


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
            leaky: float | None = None) -> nn.Sequential:
    """Conv (no bias), BatchNorm and optional LeakyReLU at indices 0, 1, 2."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block as one flat Sequential: depthwise at .0/.1, pointwise at .3/.4."""
    depthwise = conv_bn(cin, cin, 3, stride, groups=cin, leaky=0.1)
    pointwise = conv_bn(cin, cout, 1, leaky=0.1)
    return nn.Sequential(*depthwise, *pointwise)


class MobileNetBody(nn.Module):
    """MobileNetV1 at width 0.25 without its classifier; outputs strides 8, 16, 32."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 3, 2, leaky=0.1),
            depthwise_separable(8, 16, 1),
            depthwise_separable(16, 32, 2),
            depthwise_separable(32, 32, 1),
            depthwise_separable(32, 64, 2),
            depthwise_separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            depthwise_separable(64, 128, 2), *(depthwise_separable(128, 128, 1) for _ in range(5))
        )
        self.stage3 = nn.Sequential(depthwise_separable(128, 256, 2),
                                    depthwise_separable(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class ResNet50Body(nn.Module):
    """torchvision's ResNet-50 without pooling and classifier; outputs layer2, 3 and 4."""

    def __init__(self) -> None:
        super().__init__()
        net = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c1 = self.layer2(x)
        c2 = self.layer3(c1)
        return c1, c2, self.layer4(c2)


class FPN(nn.Module):
    """Lateral 1x1 convs, then top-down nearest upsampling, addition and a 3x3 merge."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int, leaky: float):
        super().__init__()
        self.output1 = conv_bn(in_channels[0], out_channels, 1, leaky=leaky)
        self.output2 = conv_bn(in_channels[1], out_channels, 1, leaky=leaky)
        self.output3 = conv_bn(in_channels[2], out_channels, 1, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, 3, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, 3, leaky=leaky)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.output3(c3)
        p2 = self.merge2(self.output2(c2) + F.interpolate(p3, size=c2.shape[-2:], mode="nearest"))
        p1 = self.merge1(self.output1(c1) + F.interpolate(p2, size=c1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Context module: 3x3, 5x5 and 7x7 receptive fields (chains of 3x3), half/quarter/quarter
    of the channels, concatenated. The 7x7 branch reuses the 5x5 branch's first conv."""

    def __init__(self, channels: int, leaky: float):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = conv_bn(channels, half, 3)
        self.conv5X5_1 = conv_bn(channels, quarter, 3, leaky=leaky)
        self.conv5X5_2 = conv_bn(quarter, quarter, 3)
        self.conv7X7_2 = conv_bn(quarter, quarter, 3, leaky=leaky)
        self.conv7x7_3 = conv_bn(quarter, quarter, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class AnchorHead(nn.Module):
    """1x1 conv giving `values` numbers per anchor, as (N, H*W*anchors, values) row-major."""

    def __init__(self, channels: int, values: int, anchors: int = 2):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """The detector network; `forward` returns the raw per-prior predictions."""

    def __init__(self, backbone: str = "mobilenet0.25"):
        super().__init__()
        if backbone not in CONFIGS:
            raise ValueError(f"unknown RetinaFace backbone {backbone!r}; "
                             f"use one of {sorted(CONFIGS)}")
        cfg = self.config = CONFIGS[backbone]
        self.body = MobileNetBody() if backbone == "mobilenet0.25" else ResNet50Body()
        self.fpn = FPN(cfg.in_channels, cfg.out_channels, cfg.leaky)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(cfg.out_channels, cfg.leaky) for _ in range(3))
        self.ClassHead = nn.ModuleList(AnchorHead(cfg.out_channels, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(AnchorHead(cfg.out_channels, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(
            AnchorHead(cfg.out_channels, 2 * LANDMARKS) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) float, BGR 0..255 minus `MEAN_BGR`.

        Returns loc (N, P, 4), conf (N, P, 2) softmax probabilities (index 1 = face) and
        landmarks (N, P, 10), in the order of `prior_boxes(H, W)`; loc and landmarks are
        offsets from the priors (see `decode_boxes`, `decode_landmarks`).
        """
        levels = self.fpn(*self.body(x))
        feats = [ssh(f) for ssh, f in zip((self.ssh1, self.ssh2, self.ssh3), levels, strict=True)]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, feats, strict=True)], 1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, feats, strict=True)], 1)
        marks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, feats, strict=True)], 1)
        return loc, conf.softmax(dim=-1), marks


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """Anchors (P, 4) as centre x, centre y, width, height, normalised by the input size.

    Order: level by level (strides 8, 16, 32), cells row-major, two sizes per cell - the
    order in which `RetinaFace.forward` emits predictions. Built in float64 on the CPU and
    returned as float32; callers cache it per input size.
    """
    parts = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64),
                                torch.arange(cols, dtype=torch.float64), indexing="ij")
        centres = torch.stack([(xs + 0.5) * stride / width, (ys + 0.5) * stride / height], -1)
        centres = centres.reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        extents = torch.tensor([[s / width, s / height] for s in sizes], dtype=torch.float64)
        parts.append(torch.cat([centres, extents.expand_as(centres)], -1).reshape(-1, 4))
    return torch.cat(parts).float()


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(..., P, 4) offsets -> (..., P, 4) boxes x1, y1, x2, y2, normalised like the priors."""
    centre = priors[..., :2] + loc[..., :2] * VARIANCES[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def decode_landmarks(marks: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(..., P, 10) offsets -> (..., P, 5, 2) points x, y, normalised like the priors."""
    offsets = marks.unflatten(-1, (LANDMARKS, 2))
    return priors[..., None, :2] + offsets * VARIANCES[0] * priors[..., None, 2:]


def fuse_batchnorm(model: RetinaFace) -> RetinaFace:
    """Fold every BatchNorm into the conv before it, in place; for inference only.

    Saves a full pass over each feature map (BatchNorm is a third of the CPU time). Only
    parents whose forward applies each BatchNorm right after the conv registered before it
    are touched: the Sequentials here, torchvision's Bottleneck and `ResNet50Body`.
    """
    for parent in list(model.modules()):
        if not isinstance(parent, (nn.Sequential, Bottleneck, ResNet50Body)):
            continue
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(list(parent.named_children())):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(parent, bn_name, nn.Identity())
    return model


# --------------------------------------------------------------------------- loading


def retinaface_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> RetinaFace:
    """Build the network that `state_dict` (official layout) describes and load it, in eval mode.

    Takes keys with or without DataParallel's `module.` prefix; the backbone is recognised
    from the keys. BatchNorm's `num_batches_tracked` counters may be absent.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    model = RetinaFace(_backbone_of(sd))
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            sd.setdefault(key, value)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise ModelError(f"RetinaFace {model.config.backbone} weights do not fit: "
                         f"{len(missing)} missing keys {missing[:3]}, "
                         f"{len(unexpected)} unexpected {unexpected[:3]}")
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelError(f"RetinaFace {model.config.backbone} weights do not fit: {first}") from exc
    return model.eval()


def load_retinaface(path: str | os.PathLike[str]) -> RetinaFace:
    """Load an official RetinaFace checkpoint (.pth, a state dict, optionally wrapped in
    {'state_dict': ...}) through the one safe reader, on the CPU."""
    state = read_state_dict(path, what="RetinaFace", advice="expected an official RetinaFace "
                            ".pth such as detection_Resnet50_Final.pth")
    return retinaface_from_state_dict(state)


def _backbone_of(state_dict: Mapping[str, torch.Tensor]) -> str:
    if "body.stage1.0.0.weight" in state_dict:
        return "mobilenet0.25"
    if "body.layer1.0.conv1.weight" in state_dict:
        return "resnet50"
    raise ModelError("not a RetinaFace state dict: no body.stage1.* (mobilenet0.25) or "
                     "body.layer1.* (resnet50) keys; expected the biubug6/facexlib layout")
