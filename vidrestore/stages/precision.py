"""Which float type a model runs in on a device."""

from __future__ import annotations

import torch
from spandrel import ImageModelDescriptor


def pick_dtype(model: ImageModelDescriptor, device: torch.device, half: bool) -> torch.dtype:
    """bf16 first on CUDA (it keeps float32's range; GFPGAN rules out fp16), else fp16, else
    float32; always float32 on the CPU, where reduced precision is slower, not faster."""
    if device.type != "cuda" or not half:
        return torch.float32
    if model.supports_bfloat16:
        return torch.bfloat16
    if model.supports_half:
        return torch.float16
    return torch.float32
