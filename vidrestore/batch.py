"""`FrameBatch`: the device-side unit of work that moves through the stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class FrameBatch:
    """N frames on the working device.

    inputs: (N, 3, H, W) float32 RGB in [0, 1], the decoded frames; only the pre-processing
        stage replaces them (with a new tensor), and no stage changes them in place.
    output: (N, 3, sH, sW) float32 RGB in [0, 1], the frames being built (None until the
        background stage has run). Later stages and the download may write it in place, so
        it must own its memory: it may not share storage with `inputs`, and neither may be
        an inference tensor (made under `torch.inference_mode`, which refuses in-place
        writes outside it). Both are checked here, the one place every stage hands over.
    scale: output size / input size.
    notes: one dict per frame; stages add log fields (faces, ...) by returning new dicts.
    times_s: each frame's presentation time in seconds (the tracker's clock, so variable
        frame rates need no special case); defaults to 0, 1, 2, ...
    """

    inputs: torch.Tensor
    scale: int
    output: torch.Tensor | None = None
    notes: tuple[dict[str, Any], ...] = field(default=())
    times_s: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.inputs.ndim != 4 or self.inputs.shape[1] != 3:
            raise ValueError(f"inputs must be (N, 3, H, W), got {tuple(self.inputs.shape)}")
        if not self.inputs.is_floating_point():
            raise ValueError(f"inputs must be float in [0, 1], got {self.inputs.dtype}")
        _check_writable("inputs", self.inputs)
        if self.output is not None:
            _check_writable("output", self.output)
            if _shares_memory(self.output, self.inputs):
                raise ValueError("output shares memory with inputs: a stage must hand on a "
                                 "new tensor (e.g. a resize to the same size must copy)")
        n, _, h, w = self.inputs.shape
        if self.output is not None and tuple(self.output.shape) != (n, 3, h * self.scale,
                                                                     w * self.scale):
            raise ValueError(f"output must be {(n, 3, h * self.scale, w * self.scale)}, "
                             f"got {tuple(self.output.shape)}")
        if not self.notes:
            object.__setattr__(self, "notes", tuple({} for _ in range(n)))
        elif len(self.notes) != n:
            raise ValueError(f"{len(self.notes)} notes for {n} frames")
        if not self.times_s:
            object.__setattr__(self, "times_s", tuple(float(i) for i in range(n)))
        elif len(self.times_s) != n:
            raise ValueError(f"{len(self.times_s)} times for {n} frames")

    def __len__(self) -> int:
        return self.inputs.shape[0]


def _check_writable(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_inference():
        raise ValueError(f"{name} is an inference tensor (made under torch.inference_mode); "
                         "run networks under torch.no_grad so later stages can write to it")


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == \
        b.untyped_storage().data_ptr()
