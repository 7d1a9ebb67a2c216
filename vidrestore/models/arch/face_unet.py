"""`FaceUNet`: vidrestore's own small face restorer, a residual encoder-decoder (U-Net).

Built for a CPU: the 512 px aligned face is folded into 12 channels at 256 px
(`PixelUnshuffle(2)`, lossless), goes through a four-level U-Net (stride-2 convs down,
nearest x2 + conv up, skip connections added, residual blocks at each level) and is unfolded
back (`PixelShuffle(2)`); the network predicts a correction added to the input face. Fully
convolutional, so it trains on patches and runs on whole crops; every layer treats each face
on its own (no normalisation across the batch), so a batch gives what its faces give alone.

Input and output: (N, 3, H, W) float RGB in [0, 1], H and W multiples of 16 (512 in a run).

The state dict has the marker buffer `face_unet_version`, which `FaceUNetArch` (a spandrel
`Architecture`) uses to recognise the file; every width is read back from the tensor shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from spandrel import Architecture, ImageModelDescriptor, SizeRequirements
from torch import nn

FACE_UNET_VERSION = 1
SIZE_MULTIPLE = 16  # unshuffle x2, then three stride-2 levels


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class FaceUNet(nn.Module):
    """widths: channels of the four levels (256, 128, 64, 32 px for a 512 face).
    blocks: residual blocks per level on the way down (and one on the way up below level 0).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 96, 128), blocks: int = 1) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"FaceUNet has four levels, got widths {tuple(widths)}")
        self.widths, self.blocks = tuple(int(w) for w in widths), int(blocks)
        self.register_buffer("face_unet_version", torch.tensor(FACE_UNET_VERSION))
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.head = nn.Conv2d(12, widths[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)
                                  for i in range(3))
        self.enc = nn.ModuleList(nn.Sequential(*(ResBlock(w) for _ in range(blocks)))
                                 for w in widths)
        self.up = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)
                                for i in range(3))
        self.dec = nn.ModuleList(ResBlock(widths[i]) for i in range(1, 3))
        self.tail = nn.Conv2d(widths[0], 12, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        nn.init.zeros_(self.tail.weight)  # starts as the identity: output = input
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % SIZE_MULTIPLE or x.shape[-2] % SIZE_MULTIPLE:
            raise ValueError(f"FaceUNet takes sides that are multiples of {SIZE_MULTIPLE}, got "
                             f"{tuple(x.shape[-2:])}")
        h = self.act(self.head(self.unshuffle(x * 2 - 1)))
        skips = []
        for level in range(4):
            if level:
                h = self.act(self.down[level - 1](h))
            h = self.enc[level](h)
            skips.append(h)
        for level in (2, 1, 0):
            h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.act(self.up[level](h)) + skips[level]
            if level:
                h = self.dec[level - 1](h)
        return x + self.shuffle(self.tail(h)) / 2  # the correction, back on the [0, 1] scale


def is_face_unet(state: Mapping[str, torch.Tensor]) -> bool:
    return "face_unet_version" in state and "head.weight" in state and "tail.weight" in state


def face_unet_from_state_dict(state: Mapping[str, torch.Tensor]) -> FaceUNet:
    version = int(state["face_unet_version"])
    if version != FACE_UNET_VERSION:
        raise ValueError(f"FaceUNet version {version}; this vidrestore reads {FACE_UNET_VERSION}")
    widths = [state["head.weight"].shape[0]] + [state[f"down.{i}.weight"].shape[0]
                                                for i in range(3)]
    blocks = len({k.split(".")[2] for k in state if k.startswith("enc.0.")})
    model = FaceUNet(widths, blocks)
    model.load_state_dict(dict(state), strict=True)
    return model


class FaceUNetArch(Architecture[FaceUNet]):
    """spandrel entry: `ModelLoader` with this in its registry loads FaceUNet files."""

    def __init__(self) -> None:
        super().__init__(id="VidrestoreFaceUNet", name="vidrestore FaceUNet", detect=is_face_unet)

    def load(self, state_dict: Mapping[str, torch.Tensor]) -> ImageModelDescriptor[FaceUNet]:
        model = face_unet_from_state_dict(state_dict)
        return ImageModelDescriptor(
            model, dict(state_dict), architecture=self, purpose="FaceSR",
            tags=[f"{model.widths[0]}nf", f"{model.blocks}b"], supports_half=False,
            supports_bfloat16=True, scale=1, input_channels=3, output_channels=3,
            size_requirements=SizeRequirements(multiple_of=SIZE_MULTIPLE),
            call_fn=lambda m, image: m(image).clamp(0, 1))
