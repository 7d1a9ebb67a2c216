"""Temporal colour consistency: restored faces keep the colour of the faces they replace.

A face restorer shifts colour a little differently on every frame (GFPGAN warms or cools skin,
changes its contrast), and a face pasted with a colour other than its surroundings shows a
seam. So each restored face is given the colour statistics of its input face: the mean RGB and
the 3x3 RGB covariance of its pixels inside the face mask. The map between the two is the
linear Monge-Kantorovich transfer (Pitie and Kokaram, "The linear Monge-Kantorovitch linear
colour mapping for example-based colour transfer", CVMP 2007): the symmetric affine colour
map, the one that moves colours least, that gives the restored face the input's mean and
covariance. A restorer that scales and shifts R, G and B each by its own amount (a colour
cast, a contrast change) applies such a map, so it is undone exactly, over the whole face
and not only on average over the mask; matching each channel's spread on its own (in YCbCr,
where such a cast mixes the channels) left a cast of a few 8-bit steps in parts of the face.

The statistics are those of the faces' low frequencies: of the mean colours of 16 x 16
cells of the crop (32 px cells at 512 px). Colour and shading live there; the detail a
restorer adds (sharper eyes, hair, skin texture) does not, and matching the restored face's
whole spread to a blurred input's would take that detail back out, its contrast scaled
down to the blur's. Measured on the 30 crops of liveportrait_d10 degraded as in
`bench/face_restorer_eval.py` (vidrestore-face-v1, central face region): +0.98 dB over the
input as restored, +1.17 dB matched on full-resolution statistics, +1.27 dB on the cells'.
An affine colour map commutes with the cell means, so a cast is still undone exactly.

The target statistics are smoothed per track with an exponential moving average, so that
frame-to-frame jitter of the input (codec noise, exposure flicker, a mask that moves with the
landmarks) does not become colour flicker. A large jump (a light switched on, a cut) resets a
track's average instead of fading through it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# BT.601 full-range RGB -> YCbCr (the JPEG matrix) without the +0.5 chroma offset: the jump
# test looks at brightness and colour on separate axes.
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114],
                            [-0.168736, -0.331264, 0.5],
                            [0.5, -0.418688, -0.081312]], dtype=torch.float64)

MAX_GAIN = 2.0  # caps the map's gain: a near-flat restored face must not amplify its noise
STD_EPS = 1e-3  # in [0, 1] units, well below one 8-bit step; added to every covariance
MIN_MASK_WEIGHT = 16.0  # fewer mask pixels than this give no usable statistics
STAT_CELLS = 16  # statistics over the means of 16 x 16 cells of a crop (32 px at 512)


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
        self._targets: dict[int, torch.Tensor] = {}  # track id -> (12,) mean, covariance

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
        cell = max(1, restored.shape[-1] // STAT_CELLS)
        stats, _ = _masked_stats(F.avg_pool2d(torch.cat([restored, inputs.float()]), cell),
                                 F.avg_pool2d(weights, cell).repeat(2, 1, 1, 1))
        source, current = stats.chunk(2)
        valid = weights.sum(dim=(1, 2, 3)) >= MIN_MASK_WEIGHT
        target = self._smoothed(track_ids, current, valid.tolist())
        transfer = _monge_kantorovich(_covariance(source), _covariance(target))
        centred = restored - source[:, :3, None, None]
        matched = torch.einsum("kij,kjhw->kihw", transfer, centred) + target[:, :3, None, None]
        amount = self.strength * valid.to(restored.dtype)[:, None, None, None]
        return torch.lerp(restored, matched, amount).clamp_(0, 1)

    def _smoothed(self, track_ids: Sequence[int], current: torch.Tensor,
                  valid: list[bool]) -> torch.Tensor:
        """(K, 12) target statistics (mean, flattened covariance) after each face's
        moving-average update.

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
            moved = (now[:, :3] - prev[:, :3]) @ _RGB_TO_YCC.to(now).T
            jumped = moved.abs().amax(dim=1) > self.jump
            new = torch.where(jumped[:, None], now, torch.lerp(prev, now, alpha))
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


def _masked_stats(images: torch.Tensor, weights: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and covariance of the channels of (N, 3, S, S) images: ((N, 12) packed
    as 3 means then the 3x3 covariance row by row, (N,) weight sum)."""
    total = weights.sum(dim=(2, 3))  # (N, 1)
    norm = total.clamp_min(1e-6)
    mean = (images * weights).sum(dim=(2, 3)) / norm
    centred = (images - mean[..., None, None]) * weights.sqrt()
    cov = torch.einsum("nihw,njhw->nij", centred, centred) / norm[..., None]
    return torch.cat([mean, cov.flatten(1)], dim=1), total[:, 0]


def _covariance(stats: torch.Tensor) -> torch.Tensor:
    """(K, 3, 3) float64 covariances from (K, 12) packed statistics, regularised by
    STD_EPS^2 on the diagonal (a flat channel still has an invertible covariance)."""
    cov = stats[:, 3:].double().reshape(-1, 3, 3)
    return cov + STD_EPS**2 * torch.eye(3, dtype=cov.dtype, device=cov.device)


def _monge_kantorovich(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(K, 3, 3) float32 symmetric maps T with T S T = C for source covariances S and target
    covariances C (the optimal-transport map between Gaussians): S^-1/2 (S^1/2 C S^1/2)^1/2
    S^-1/2, its gains (eigenvalues) capped at MAX_GAIN."""
    root, inverse_root = _matrix_power(source), _matrix_power(source, power=-0.5)
    transfer = inverse_root @ _matrix_power(root @ target @ root) @ inverse_root
    return _matrix_power(transfer, power=1.0, cap=MAX_GAIN).float()


def _matrix_power(matrices: torch.Tensor, power: float = 0.5, cap: float | None = None
                  ) -> torch.Tensor:
    """Powers of symmetric positive semi-definite (K, 3, 3) matrices (the square root by
    default) through their eigendecomposition; eigenvalues clamped at 0 first (and at `cap`
    after)."""
    values, vectors = torch.linalg.eigh((matrices + matrices.mT) / 2)
    values = values.clamp_min(1e-12) ** power
    if cap is not None:
        values = values.clamp_max(cap)
    return vectors @ torch.diag_embed(values) @ vectors.mT
