"""Background stages: Real-ESRGAN upscaling (tiled, reduced precision on CUDA) or a plain resize."""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from spandrel import ImageModelDescriptor

from ..batch import FrameBatch
from .compiled import CompiledNet
from .precision import pick_dtype

log = logging.getLogger(__name__)

CPU_TILE = 512  # bounds CPU memory for the big RRDB feature maps


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of (N, 3, H, W) floats, antialiased when shrinking, clamped to [0, 1]."""
    if frames.shape[-2:] == (height, width):
        return frames
    shrinking = height < frames.shape[-2] or width < frames.shape[-1]
    out = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False,
                        antialias=shrinking)
    return out.clamp_(0, 1)


class PlainResize:
    """`--bg-model none`: the background is resized to the output size, nothing more."""

    name = "background"

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        _, _, h, w = batch.inputs.shape
        return dataclasses.replace(batch, output=resize(batch.inputs, h * batch.scale,
                                                        w * batch.scale))


class BackgroundUpscaler:
    """Upscales whole frames with a super-resolution model, then resizes to the wanted scale.

    All frames of a batch go through the model together, tile by tile. Tiles overlap by
    `tile_pad` input pixels of context that are cropped away, so seams do not show.
    `tile=0` runs whole frames on CUDA (halving the tile on out-of-memory) and
    `CPU_TILE`-pixel tiles on the CPU.

    `channels_last` (default: on CUDA) keeps weights and activations in NHWC memory order,
    which cuDNN's tensor-core convolutions use without transposing; the frames arrive in
    that order already (see `HostTransfer.upload`). `compile` is a torch.compile mode.
    """

    name = "background"

    def __init__(self, model: ImageModelDescriptor, device: torch.device, *, tile: int = 0,
                 tile_pad: int = 16, half: bool = True, channels_last: bool | None = None,
                 compile: str = "off") -> None:
        self.device = device
        self.dtype = pick_dtype(model, device, half)
        self.model = model.to(device).to(self.dtype).eval()
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        if self.channels_last:
            self.model.model.to(memory_format=torch.channels_last)
        self.compiled = CompiledNet(self.model.model, compile, device)
        self.model_scale = model.scale
        self.tile = tile or (0 if device.type == "cuda" else CPU_TILE)
        self.tile_pad = tile_pad

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        _, _, h, w = batch.inputs.shape
        upscaled = self._run_with_fallback(batch.inputs)
        return dataclasses.replace(batch, output=resize(upscaled, h * batch.scale,
                                                        w * batch.scale))

    def _run_with_fallback(self, frames: torch.Tensor) -> torch.Tensor:
        tile = self.tile
        while True:
            try:
                return self._run_tiled(frames, tile)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                longest = max(frames.shape[-2:])
                tile = (tile or longest) // 2
                if tile < 64:
                    raise
                log.warning("out of memory in the background model; retrying with %d px tiles",
                            tile)
                self.tile = tile  # remember for the next batches

    @torch.inference_mode()
    def _run_tiled(self, frames: torch.Tensor, tile: int) -> torch.Tensor:
        n, c, h, w = frames.shape
        s = self.model_scale
        if not tile or (h <= tile and w <= tile):
            return self._infer(frames)
        out = torch.empty((n, c, h * s, w * s), dtype=torch.float32, device=frames.device)
        pad = self.tile_pad
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                bottom, right = min(top + tile, h), min(left + tile, w)
                t0, l0 = max(top - pad, 0), max(left - pad, 0)
                b0, r0 = min(bottom + pad, h), min(right + pad, w)
                result = self._infer(frames[:, :, t0:b0, l0:r0])
                out[:, :, top * s:bottom * s, left * s:right * s] = result[
                    :, :, (top - t0) * s:(bottom - t0) * s, (left - l0) * s:(right - l0) * s]
        return out

    def _infer(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.dtype)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        self.compiled.step()
        out = self.model(frames)
        return out.float() if out.dtype != torch.float32 else self.compiled.keep(out)
