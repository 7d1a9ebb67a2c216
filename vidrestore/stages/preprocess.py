"""Pre-processing before any other stage: gray-world white balance, non-local-means
denoising and CLAHE on the lightness, each optional (`PreprocessConfig`).

All three work on the device tensors of a `FrameBatch`, (N, 3, H, W) float RGB in [0, 1],
and replace `batch.inputs`, so the background upscaler, the face detector and the restorer
all see the cleaned frames. Together they undo a strong colour cast (the blue of night or
thermal footage): white balance brings the channel means together, CLAHE restores the
contrast a dark cast leaves, and only the lightness is equalised, so hue and chroma (skin
tones) are left as the white balance made them.

The white balance keeps the one piece of stream state: a moving average of its gains over
time, so the colour of a video does not flicker from frame to frame.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.enhance import equalize_clahe

from ..batch import FrameBatch
from ..config import ClaheConfig, DenoiseConfig, PreprocessConfig, WhiteBalanceConfig

# Pixels left out of the gray-world means: clipped highlights carry no colour information
# and near-black pixels only noise.
_CLIPPED = 0.98
_DARK = 0.02


@dataclass
class WhiteBalanceState:
    """The smoothed per-channel log gains, (3,), and the time of the last frame (seconds)."""

    log_gains: torch.Tensor | None = None
    time_s: float | None = None


class Preprocessor:
    """The enabled pre-processing steps, in the order white balance, denoise, CLAHE."""

    name = "preprocess"

    def __init__(self, config: PreprocessConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.state = WhiteBalanceState()

    @torch.no_grad()
    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        """batch.inputs: (N, 3, H, W) float RGB in [0, 1] on the device. Returns the batch
        with new inputs (the old tensor is not changed) and, per frame, a "preprocess" note:
        the white-balance gains applied and which steps ran."""
        frames = batch.inputs
        cfg = self.config
        gains = None
        if cfg.white_balance.enabled:
            gains = self._smoothed_gains(frames, batch.times_s)
            frames = (frames * gains[:, :, None, None]).clamp(0, 1)
        if cfg.denoise.enabled:
            frames = denoise(frames, cfg.denoise)
        if cfg.clahe.enabled:
            frames = clahe_lightness(frames, cfg.clahe)
        steps = [name for name, on in (("white_balance", cfg.white_balance.enabled),
                                       ("denoise", cfg.denoise.enabled),
                                       ("clahe", cfg.clahe.enabled)) if on]
        notes = tuple({**note, "preprocess": {
            "steps": steps,
            "gains": None if gains is None else [round(g, 4) for g in gains[n].tolist()]}}
            for n, note in enumerate(batch.notes))
        return dataclasses.replace(batch, inputs=frames.contiguous(), notes=notes)

    def _smoothed_gains(self, frames: torch.Tensor, times_s: tuple[float, ...]) -> torch.Tensor:
        """(N, 3) gains: each frame's gray-world gains, averaged over time in log space."""
        wb = self.config.white_balance
        raw = gray_world_gains(frames, wb).log()
        out = torch.empty_like(raw)
        state = self.state
        for n, time_s in enumerate(times_s):
            if state.log_gains is None or wb.smoothing_s == 0:
                state.log_gains = raw[n]
            else:
                dt = max(time_s - state.time_s, 0.0)
                alpha = 1.0 - math.exp(-dt / wb.smoothing_s)
                state.log_gains = torch.lerp(state.log_gains.to(raw.device), raw[n], alpha)
            state.time_s = time_s
            out[n] = state.log_gains
        return out.exp()


def gray_world_gains(frames: torch.Tensor, config: WhiteBalanceConfig) -> torch.Tensor:
    """(N, 3) per-channel gains that make each frame's channel means equal to their mean
    (the frame's brightness is kept), raised to `strength`, bounded by `max_gain`.

    Means are taken over pixels neither clipped nor near black (all of them when there are
    too few such pixels)."""
    usable = ((frames.amax(1, keepdim=True) < _CLIPPED)
              & (frames.mean(1, keepdim=True) > _DARK)).float()  # (N, 1, H, W)
    count = usable.sum((2, 3))
    enough = count >= 0.01 * frames.shape[-1] * frames.shape[-2]
    weights = torch.where(enough[:, :, None, None], usable, torch.ones_like(usable))
    means = (frames * weights).sum((2, 3)) / weights.sum((2, 3))  # (N, 3)
    means = means.clamp_min(1e-4)
    gains = (means.mean(1, keepdim=True) / means) ** config.strength
    return gains.clamp(1 / config.max_gain, config.max_gain)


def denoise(frames: torch.Tensor, config: DenoiseConfig) -> torch.Tensor:
    """Pixel-wise non-local means of (N, 3, H, W) RGB in [0, 1].

    Each pixel becomes the weighted mean of the pixels in its `search` window, weighted by
    exp(-d2 / h^2), d2 the mean squared difference of the `patch`-sized neighbourhoods over
    the three channels (8-bit units), as OpenCV's `fastNlMeansDenoising` weighs them. One
    pass per offset in the window, over the whole batch at once."""
    n, c, height, width = frames.shape
    radius, half = config.search // 2, config.patch // 2
    padded = F.pad(frames, (radius,) * 4, mode="replicate")
    scale = (255.0 / config.strength) ** 2
    total = torch.zeros_like(frames)
    weight_sum = torch.zeros((n, 1, height, width), dtype=frames.dtype, device=frames.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[..., radius + dy:radius + dy + height,
                             radius + dx:radius + dx + width]
            d2 = (frames - shifted).square().mean(1, keepdim=True)
            d2 = _box_mean(d2, half)
            weight = torch.exp(-scale * d2)
            total.addcmul_(weight, shifted)
            weight_sum += weight
    return total / weight_sum


def _box_mean(maps: torch.Tensor, half: int) -> torch.Tensor:
    """Mean over the (2 half + 1)^2 square around each pixel, edges replicated; separable."""
    if half == 0:
        return maps
    size = 2 * half + 1
    maps = F.pad(maps, (half, half, 0, 0), mode="replicate")
    maps = F.avg_pool2d(maps, (1, size), stride=1)
    maps = F.pad(maps, (0, 0, half, half), mode="replicate")
    return F.avg_pool2d(maps, (size, 1), stride=1)


def clahe_lightness(frames: torch.Tensor, config: ClaheConfig) -> torch.Tensor:
    """CLAHE of the CIE L* channel of (N, 3, H, W) sRGB in [0, 1]; a* and b* untouched.

    kornia's CLAHE follows OpenCV's (256-bin tiles, clip limit, bilinear blend of the tile
    maps). Frames smaller than the grid are returned as they are."""
    height, width = frames.shape[-2:]
    if height <= config.grid or width <= config.grid:
        return frames
    lab = rgb_to_lab(frames.float())
    lightness = equalize_clahe(lab[:, :1] / 100.0, clip_limit=config.clip_limit,
                               grid_size=(config.grid, config.grid))
    lab = torch.cat([lightness * 100.0, lab[:, 1:]], 1)
    return lab_to_rgb(lab).clamp(0, 1)
