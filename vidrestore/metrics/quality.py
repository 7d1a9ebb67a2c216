"""Image quality figures on device tensors: PSNR, SSIM and sharpness (variance of the Laplacian).

All functions take (N, 3, H, W) float RGB in [0, 1] on any device and return (N,) float64 CPU
tensors, one figure per image. SSIM and sharpness are measured on the BT.601 luma, as
grayscale images usually are; sharpness reads in 8-bit units (luma x 255), so it compares with
`cv2.Laplacian(gray_uint8, cv2.CV_64F).var()` (same 4-neighbour kernel; OpenCV also counts the
border pixels, here only pixels with a full 3x3 neighbourhood count).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0  # identical images: a finite figure JSON can hold
SSIM_WINDOW = 11  # Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03
SSIM_SIGMA = 1.5
_C1, _C2 = 0.01**2, 0.03**2
_LUMA = (0.299, 0.587, 0.114)


def luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) BT.601 luma, float32, same range."""
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=images.device)
    return (images.float() * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB of a against b over all channels, peak 1; capped at `PSNR_CAP_DB`."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1).double().cpu()
    db = 10 * torch.log10(1 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))
    return db.clamp_max(PSNR_CAP_DB)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) mean SSIM of the luma of a and b over the valid (unpadded) window positions.

    Images smaller than the 11-px window on either side give NaN (too small to measure).
    """
    if min(a.shape[-2:]) < SSIM_WINDOW:
        return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    x, y = luma(a), luma(b)
    blur = _gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], 1))
    mx, my, xx, yy, xy = blur.unbind(1)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    score = ((2 * mx * my + _C1) * (2 * cov + _C2)
             / ((mx * mx + my * my + _C1) * (vx + vy + _C2)))
    return score.flatten(1).mean(1).double().cpu()


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """(N,) variance of the 3x3 Laplacian of the luma in 8-bit units; NaN under 3x3 px.

    The 4-neighbour stencil as shifted slices: on a CPU several times faster than a
    one-channel conv2d."""
    if min(images.shape[-2:]) < 3:
        return torch.full((images.shape[0],), math.nan, dtype=torch.float64)
    y = luma(images) * 255
    response = (y[..., :-2, 1:-1] + y[..., 2:, 1:-1] + y[..., 1:-1, :-2] + y[..., 1:-1, 2:]
                - 4 * y[..., 1:-1, 1:-1]).flatten(1)
    centred = response - response.mean(1, keepdim=True)
    return centred.square().mean(1).double().cpu()


def _gaussian_blur(maps: torch.Tensor) -> torch.Tensor:
    """Separable 11-tap Gaussian over each channel of (N, C, H, W), valid positions only."""
    taps = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=maps.device)
    kernel = torch.exp(-0.5 * ((taps - SSIM_WINDOW // 2) / SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    channels = maps.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(maps, rows, groups=channels), cols, groups=channels)
