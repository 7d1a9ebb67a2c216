"""Background stages: Real-ESRGAN upscaling (tiled, reduced precision on CUDA) or a plain resize."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from spandrel import ImageModelDescriptor

from ..batch import FrameBatch
from ..models.capabilities import pick_dtype
from .compiled import CompiledNet

log = logging.getLogger(__name__)

CPU_TILE = 512  # bounds CPU memory for the big RRDB feature maps


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of (N, 3, H, W) floats, antialiased when shrinking, clamped to [0, 1].

    Always a new tensor (a copy at the same size): callers own the result and may write to
    it, and `frames` is never written."""
    if frames.shape[-2:] == (height, width):
        return frames.clamp(0, 1)
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
    """Upscales whole frames with a super-resolution model to the wanted scale.

    All frames of a batch go through the model together, tile by tile. Tiles overlap by
    `tile_pad` input pixels of context that are cropped away, so seams do not show. Each
    tile's model output is resized to the wanted scale before it is placed (an x4 model at
    --scale 2 never holds the whole x4 frame): the resize sees the tile's context, and tile
    corners fall on whole pixels at both scales, so the result is the whole-frame resize.
    `tile=0` runs whole frames on CUDA (halving the tile on out-of-memory) and
    `CPU_TILE`-pixel tiles on the CPU.

    `channels_last` (default: on CUDA) keeps weights and activations in NHWC memory order,
    which cuDNN's tensor-core convolutions use without transposing; the frames arrive in
    that order already (see `HostTransfer.upload`). `compile` is a torch.compile mode.
    `on_fallback` hears about each fallback taken (out-of-memory tile halving).
    """

    name = "background"

    def __init__(self, model: ImageModelDescriptor, device: torch.device, *, tile: int = 0,
                 tile_pad: int = 16, half: bool = True, channels_last: bool | None = None,
                 compile: str = "off", on_fallback: Callable[[str], None] | None = None) -> None:
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
        self.on_fallback = on_fallback

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        return dataclasses.replace(batch, output=self._run_with_fallback(batch.inputs,
                                                                         batch.scale))

    def _run_with_fallback(self, frames: torch.Tensor, scale: int) -> torch.Tensor:
        tile = self.tile
        while True:
            try:
                return self._run_tiled(frames, tile, scale)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                longest = max(frames.shape[-2:])
                tile = (tile or longest) // 2
                if tile < 64:
                    raise
                log.warning("out of memory in the background model; retrying with %d px tiles",
                            tile)
                if self.on_fallback:
                    self.on_fallback(f"background tiles halved to {tile} px (out of memory)")
                self.tile = tile  # remember for the next batches

    @torch.no_grad()  # not inference_mode: later stages and the download write the result
    def _run_tiled(self, frames: torch.Tensor, tile: int, scale: int) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, H*scale, W*scale) float32, a new tensor."""
        n, c, h, w = frames.shape
        if not tile or (h <= tile and w <= tile):
            return _at_size(self._infer(frames), h * scale, w * scale)
        out = torch.empty((n, c, h * scale, w * scale), dtype=torch.float32,
                          device=frames.device)
        pad = self.tile_pad
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                bottom, right = min(top + tile, h), min(left + tile, w)
                t0, l0 = max(top - pad, 0), max(left - pad, 0)
                b0, r0 = min(bottom + pad, h), min(right + pad, w)
                result = _at_size(self._infer(frames[:, :, t0:b0, l0:r0]),
                                  (b0 - t0) * scale, (r0 - l0) * scale, writable=False)
                out[:, :, top * scale:bottom * scale, left * scale:right * scale] = result[
                    :, :, (top - t0) * scale:(bottom - t0) * scale,
                    (left - l0) * scale:(right - l0) * scale]
        return out

    def _infer(self, frames: torch.Tensor) -> torch.Tensor:
        """The network on `frames`, float32, clamped to [0, 1]; an inference tensor when the
        network ran in float32 (see `_at_size`)."""
        frames = frames.to(self.dtype)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        self.compiled.step()
        out = self.model(frames)
        return out.float() if out.dtype != torch.float32 else self.compiled.keep(out)


def _at_size(upscaled: torch.Tensor, height: int, width: int, *,
             writable: bool = True) -> torch.Tensor:
    """The network's output at the wanted size; with `writable`, a tensor the stages may
    write (a tile that is only copied into the frame need not be).

    spandrel's descriptor call runs under `torch.inference_mode` (its output is clamped to
    [0, 1] there), and an inference tensor refuses in-place writes outside it. A resize, or
    the `.float()` of a bf16/fp16 output, already makes a normal tensor; only a float32
    output at the model's own scale needs the one copy."""
    if upscaled.shape[-2:] != (height, width):
        return resize(upscaled, height, width)
    return upscaled.clone() if writable and upscaled.is_inference() else upscaled
