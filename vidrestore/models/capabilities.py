"""What a loaded model can do on a device: its scale, the float types it runs in, whether it
may be tiled and the crop size it expects. `Capabilities` is filled in one place, the model
factory, from the architecture's own description (spandrel's descriptor, or the constants of
vidrestore's own networks); the stages read their float type from `pick_dtype`, the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Capabilities:
    """scale: output side / input side (1 for face restorers, detectors and parsers).
    precisions: the float types the model runs in on this device, the preferred first;
        float32 is always there, and alone on a CPU (reduced precision is slower there).
    tiling: the model may run on tiles of a frame and give the whole-frame result.
    input_size: the side of the square crops it expects (512 for GFPGAN and CodeFormer), or
        None when any size does.
    """

    scale: int
    precisions: tuple[torch.dtype, ...]
    tiling: bool
    input_size: int | None

    def __post_init__(self) -> None:
        if not self.precisions or self.precisions[-1] != torch.float32:
            raise ValueError(f"precisions must end with torch.float32, got {self.precisions}")

    def dtype(self, half: bool) -> torch.dtype:
        """The preferred float type, or float32 when reduced precision is off."""
        return self.precisions[0] if half else torch.float32

    def describe(self) -> dict[str, object]:
        """A plain record for the run summary."""
        return {"scale": self.scale, "tiling": self.tiling, "input_size": self.input_size,
                "precisions": [str(p).removeprefix("torch.") for p in self.precisions]}


def supports_bf16(device: torch.device) -> bool:
    """A CUDA device with native bf16 (Ampere and later). Older cards (T4, V100, the 10
    series) only emulate it, slower than float32, so they do not count."""
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no including_emulation and never emulates
        return torch.cuda.is_bf16_supported()


def precisions_on(device: torch.device, *, bf16: bool, fp16: bool) -> tuple[torch.dtype, ...]:
    """bf16 first on CUDA where the card has it (it keeps float32's range; GFPGAN rules out
    fp16), then fp16 where the model allows it, then float32; float32 alone on the CPU."""
    if device.type != "cuda":
        return (torch.float32,)
    found = [torch.bfloat16] if bf16 and supports_bf16(device) else []
    found += [torch.float16] if fp16 else []
    return (*found, torch.float32)


def pick_dtype(model, device: torch.device, half: bool) -> torch.dtype:
    """The float type a spandrel descriptor `model` runs in on `device`: its preferred one
    when `half`, else float32."""
    found = precisions_on(device, bf16=model.supports_bfloat16, fp16=model.supports_half)
    return found[0] if half else torch.float32
