"""Temporal colour consistency: restored faces keep the colour of the faces they replace.

A face restorer shifts colour a little differently on every frame (GFPGAN warms or cools skin,
changes its contrast), and a face pasted with a colour other than its surroundings shows a
seam. So each restored face is given the colour statistics of its input face: per-channel
mean and standard deviation inside the face mask, matched in YCbCr. YCbCr is linear in RGB,
so matching its mean matches the RGB mean exactly; it separates brightness from colour, so
luma contrast and chroma saturation are matched each on their own axis.

The target statistics are smoothed per track with an exponential moving average, so that
frame-to-frame jitter of the input (codec noise, exposure flicker, a mask that moves with the
landmarks) does not become colour flicker. A large jump (a light switched on, a cut) resets a
track's average instead of fading through it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch

log = logging.getLogger(__name__)

# BT.601 full-range RGB -> YCbCr (the JPEG matrix) without the +0.5 chroma offset, which
# cancels out of a mean/std transfer.
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114],
                            [-0.168736, -0.331264, 0.5],
                            [0.5, -0.418688, -0.081312]], dtype=torch.float64)
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC)

MAX_GAIN = 2.0  # caps std ratios: a near-flat restored channel must not amplify its noise
STD_EPS = 1e-3  # in [0, 1] units, well below one 8-bit step
MIN_MASK_WEIGHT = 16.0  # fewer mask pixels than this give no usable statistics


class ColourConsistency:
    """Matches restored faces to their inputs' colour, smoothed over time per track.

    strength: 0-1, how much of the colour correction is applied (0 leaves faces alone).
    history_frames: >= 1, time constant of the moving average in frames: each frame's own
        statistics get weight 1 / history_frames (1 means no smoothing).
    jump: a track whose input face's mean (Y, Cb or Cr, in [0, 1] units) moves by more than
        this from its average restarts from the new statistics.
    The per-track averages (float32 tensors on the faces' device) are the only state; forget
    a track with `reset` or `end`.
    """

    def __init__(self, strength: float = 1.0, history_frames: float = 4.0, *,
                 jump: float = 0.08) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if history_frames < 1.0:
            raise ValueError(f"history_frames must be at least 1, got {history_frames}")
        self.strength = strength
        self.history_frames = history_frames
        self.jump = jump
        self._targets: dict[int, torch.Tensor] = {}  # track id -> (2, 3) mean; std in YCbCr

    @property
    def tracks(self) -> frozenset[int]:
        """Track ids that currently have a colour history."""
        return frozenset(self._targets)

    def reset(self, track_id: int) -> None:
        """Forget one track's history (its next face starts afresh)."""
        self._targets.pop(track_id, None)

    def end(self, track_ids: Iterable[int]) -> None:
        """Forget tracks that have ended."""
        for track_id in track_ids:
            self.reset(track_id)

    @torch.no_grad()
    def __call__(self, track_ids: Sequence[int], restored: torch.Tensor, inputs: torch.Tensor,
                 masks: torch.Tensor | None = None) -> torch.Tensor:
        """Colour-correct K restored faces.

        track_ids: K track ids; faces of one track must come in frame order.
        restored, inputs: (K, 3, S, S) float RGB in [0, 1], on one device.
        masks: (K, 1, S, S) float weights in [0, 1] marking the face (soft edges are fine),
            or None to measure over the whole crop.
        Returns (K, 3, S, S) float32 in [0, 1] on the same device. A face whose mask is
        (nearly) empty comes back unchanged and leaves its track's history alone.
        """
        weights = _check(track_ids, restored, inputs, masks)
        if not track_ids or self.strength == 0.0:
            return restored.float().clone()
        restored = restored.float()
        restored_ycc = _to_ycc(restored)
        stats, mask_weight = _masked_stats(torch.cat([restored_ycc, _to_ycc(inputs.float())]),
                                           weights.repeat(2, 1, 1, 1))
        source, current = stats.chunk(2)
        valid = mask_weight[: len(track_ids)] >= MIN_MASK_WEIGHT
        target = self._smoothed(track_ids, current, valid.tolist())
        gain = (target[:, 1] / (source[:, 1] + STD_EPS)).clamp(max=MAX_GAIN)
        matched_ycc = ((restored_ycc - source[:, 0, :, None, None]) * gain[..., None, None]
                       + target[:, 0, :, None, None])
        amount = self.strength * valid.to(restored.dtype)[:, None, None, None]
        return torch.lerp(restored, _to_rgb(matched_ycc), amount).clamp_(0, 1)

    def _smoothed(self, track_ids: Sequence[int], current: torch.Tensor,
                  valid: list[bool]) -> torch.Tensor:
        """(K, 2, 3) target statistics after each face's moving-average update.

        Faces are updated in steps: step n holds every track's n-th face in this call, so
        each step is one vectorised update over distinct tracks, in frame order.
        """
        targets = current.clone()
        seen: dict[int, int] = {}
        steps: list[list[int]] = []
        for i, track_id in enumerate(track_ids):
            if valid[i]:
                n = seen[track_id] = seen.get(track_id, -1) + 1
                if n == len(steps):
                    steps.append([])
                steps[n].append(i)
        alpha = 1.0 / self.history_frames
        for faces in steps:
            ids = [track_ids[i] for i in faces]
            now = current[faces]
            prev = torch.stack([self._targets.get(t, now[j]) for j, t in enumerate(ids)])
            jumped = (now[:, 0] - prev[:, 0]).abs().amax(dim=1) > self.jump
            new = torch.where(jumped[:, None, None], now, torch.lerp(prev, now, alpha))
            if log.isEnabledFor(logging.DEBUG) and jumped.any():
                log.debug("colour jumped on track(s) %s; their averages restart",
                          [t for t, j in zip(ids, jumped.tolist(), strict=True) if j])
            targets[faces] = new
            self._targets.update(zip(ids, new.unbind(0), strict=True))
        return targets


def _check(track_ids: Sequence[int], restored: torch.Tensor, inputs: torch.Tensor,
           masks: torch.Tensor | None) -> torch.Tensor:
    """The mask weights, (K, 1, S, S) float32; raises ValueError on mismatched shapes."""
    k = len(track_ids)
    if restored.ndim != 4 or restored.shape[:2] != (k, 3):
        raise ValueError(f"restored must be ({k}, 3, S, S) for {k} track ids, "
                         f"got {tuple(restored.shape)}")
    if inputs.shape != restored.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and restored {tuple(restored.shape)} "
                         "differ in shape")
    if masks is None:
        return torch.ones_like(restored[:, :1], dtype=torch.float32)
    if masks.shape != (k, 1, *restored.shape[2:]):
        raise ValueError(f"masks must be {(k, 1, *restored.shape[2:])}, got {tuple(masks.shape)}")
    return masks.float()


def _to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,kjhw->kihw", _RGB_TO_YCC.to(rgb), rgb)


def _to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,kjhw->kihw", _YCC_TO_RGB.to(ycc), ycc)


def _masked_stats(images: torch.Tensor, weights: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-channel (mean, std) of (N, C, S, S) images: ((N, 2, C), (N,) weight sum)."""
    total = weights.sum(dim=(2, 3))  # (N, 1)
    norm = total.clamp_min(1e-6)
    mean = (images * weights).sum(dim=(2, 3)) / norm
    var = ((images - mean[..., None, None]).square() * weights).sum(dim=(2, 3)) / norm
    return torch.stack([mean, var.sqrt()], dim=1), total[:, 0]
