"""Host <-> device frame transfer: uint8 crosses the bus, floats live on the device.

Batches of 720p frames are tens of MB; allocating fresh tensors for every batch costs page
faults that showed up as most of the pipeline's overhead on a CPU. So the float input
buffer is reused from batch to batch, and the output is converted frame by frame through
one reused float frame (never in place: the output tensor belongs to the stages).
"""

from __future__ import annotations

import numpy as np
import torch

from .frames import Frame


class HostTransfer:
    """Uploads host frames into a reused device buffer and downloads results as uint8.

    Not thread-safe: one device worker owns it, and a batch's inputs are dead once its
    outputs have been downloaded (the next `upload` overwrites them).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._inputs: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None  # one output frame, (H, W, 3) float32

    def upload(self, frames: list[Frame]) -> torch.Tensor:
        """uint8 (H, W, 3) frames to (N, 3, H, W) float32 [0, 1] on the device.

        The tensor is channels-last in memory (a view of NHWC), which the convolutions
        downstream handle without a copy.
        """
        height, width, _ = frames[0].image.shape
        buffer = self._buffer(torch.Size((len(frames), height, width, 3)))
        if self.device.type == "cuda":
            stacked = torch.from_numpy(np.stack([f.image for f in frames])).pin_memory()
            buffer.copy_(stacked.to(self.device, non_blocking=True))
        else:  # straight from each frame's memory, no stacked copy
            for slot, frame in zip(buffer, frames, strict=True):
                slot.copy_(torch.from_numpy(frame.image))
        return buffer.div_(255.0).permute(0, 3, 1, 2)

    def download(self, frames: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) float [0, 1] to uint8 (N, H, W, 3) on the host; `frames` is only read.

        Each frame is scaled in a reused one-frame float buffer, so converting a batch
        costs no batch-sized allocation and the caller's tensor is left as it was."""
        n, _, height, width = frames.shape
        nhwc = torch.empty((n, height, width, 3), dtype=torch.uint8, device=frames.device)
        scratch = self._scratch_for(frames)
        for i in range(n):
            torch.mul(frames[i].permute(1, 2, 0), 255.0, out=scratch)
            scratch.add_(0.5).clamp_(0.0, 255.0)  # round half up once truncated
            nhwc[i].copy_(scratch)
        return nhwc.cpu().numpy()

    def _scratch_for(self, frames: torch.Tensor) -> torch.Tensor:
        shape = torch.Size((frames.shape[2], frames.shape[3], 3))
        if self._scratch is None or self._scratch.shape != shape \
                or self._scratch.device != frames.device:
            self._scratch = torch.empty(shape, dtype=torch.float32, device=frames.device)
        return self._scratch

    def _buffer(self, shape: torch.Size) -> torch.Tensor:
        if self._inputs is None or self._inputs.shape != shape:
            self._inputs = torch.empty(shape, dtype=torch.float32, device=self.device)
        return self._inputs
