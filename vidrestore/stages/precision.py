"""Which float type a model runs in on a device."""

from __future__ import annotations

import torch
from spandrel import ImageModelDescriptor


def supports_bf16(device: torch.device) -> bool:
    """A CUDA device with native bf16 (Ampere and later). Older cards (T4, V100, the 10
    series) only emulate it, slower than float32, so they do not count."""
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no including_emulation and never emulates
        return torch.cuda.is_bf16_supported()


def pick_dtype(model: ImageModelDescriptor, device: torch.device, half: bool) -> torch.dtype:
    """bf16 first on CUDA where the card has it (it keeps float32's range; GFPGAN rules out
    fp16), else fp16 where the model allows it, else float32; always float32 on the CPU,
    where reduced precision is slower, not faster."""
    if device.type != "cuda" or not half:
        return torch.float32
    if model.supports_bfloat16 and supports_bf16(device):
        return torch.bfloat16
    if model.supports_half:
        return torch.float16
    return torch.float32
