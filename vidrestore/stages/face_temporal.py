"""Temporal steadying: what a restorer adds to a face stays put from frame to frame.

A face restorer sees each frame on its own. Where the input wobbles from frame to frame (a
hair outline or an eyelid edge that codec blocks and noise shift by a fraction of a pixel),
a restorer that sharpens it makes the wobble sharper too: on video that reads as flicker,
though the face itself may not move. So each restored face is blended with the same track's
steadied face of the frame before, carried along the face's motion (Lai et al., "Learning
Blind Video Temporal Consistency", ECCV 2018, use the same warped-previous-output idea):

    flow      DIS optical flow between the track's input crops t-1 and t (half size,
              blurred: the face's motion, not its noise), checked forward against
              backward (the flicker metric's `MotionEstimator`); pixels that fail get no blend
    warped    steadied_{t-1} carried to frame t by the flow (bilinear, on the device)
    d         local mean of |luma(restored_t - warped)|
    w         strength * clamp(1 - d / threshold, 0, 1) where the flow holds, else 0
    steadied_t = restored_t + w * (warped - restored_t)

Where the two agree to within `threshold` (wobble, re-drawn texture) the face is a recursive
average along the motion; where they differ more (a blink, the mouth opening faster than
the flow follows) the new face is taken as it is, so nothing lags behind real motion. The
crops follow the smoothed landmarks, so the flow between them is small. The state is each
track's last flow guide (its input crop, small and blurred, on the host) and steadied face;
a track that was not restored on the frame before starts afresh.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..batch import FrameBatch
from ..metrics.flicker import MotionEstimator

_LUMA = (0.299, 0.587, 0.114)
BLUR_PX = 7  # local mean window of the difference, crop pixels (512 px crops)
# The flow is measured on the crops shrunk by FLOW_SCALE and blurred by FLOW_SIGMA pixels
# there: coarse enough to follow the face and not the wobble of its edges. On
# liveportrait_d10 (bench/face_restorer_eval.py), warping error 1.740 at half size and
# sigma 2, 1.745 at sigma 1, 1.840 at full size (sigma 2), 1.772 at quarter size.
FLOW_SCALE = 2
FLOW_SIGMA = 2.0


@dataclasses.dataclass
class SteadyHistory:
    """Per track: its last input crop as the flow sees it (a small blurred uint8 host image,
    `flow_guides`), its last steadied face ((3, S, S) on the device) and that frame's time;
    `last_time`: the time of the last frame the stage saw (a track continues only from that
    frame)."""

    guides: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    faces: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    times: dict[int, float] = dataclasses.field(default_factory=dict)
    last_time: float | None = None

    def end(self, track_ids) -> None:
        for track_id in track_ids:
            for history in (self.guides, self.faces, self.times):
                history.pop(track_id, None)


class FaceTemporal:
    """A `StreamStage`: faces.restored (K, 3, S, S) float RGB in [0, 1] -> steadied along
    the motion against the same track's face on the frame before (module docstring).

    strength: 0-1 (1 excluded), the most weight the frame before gets (0: off).
    threshold: in [0, 1] luma units, the local difference above which the new face is
        taken as it is.
    """

    name = "temporal"

    def __init__(self, strength: float, threshold: float) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {strength}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        self.strength, self.threshold = strength, threshold
        self.state = SteadyHistory()
        self._motion = MotionEstimator()

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces, history = batch.faces, self.state
        if not (faces.restored_count and self.strength > 0):
            if len(batch):
                history.last_time = batch.times_s[-1]
            history.end(faces.ended_tracks)
            return batch
        track_ids = [faces.track_ids[i] for i in faces.restore_index.tolist()]
        frames = faces.crop_frames.tolist()
        steadied = faces.restored.clone()
        for frame, now in enumerate(batch.times_s):
            index = [k for k, f in enumerate(frames) if f == frame]
            if not index:
                history.last_time = now
                continue
            guides = flow_guides(faces.crops[index])  # each face downloaded once
            continuing = [j for j, k in enumerate(index) if history.last_time is not None
                          and history.times.get(track_ids[k]) == history.last_time]
            if continuing:
                rows = [index[j] for j in continuing]
                ids = [track_ids[k] for k in rows]
                steadied[rows] = self._blend(
                    steadied[rows], [guides[j] for j in continuing],
                    [history.guides[t] for t in ids],
                    torch.stack([history.faces[t] for t in ids]))
            for j, k in enumerate(index):
                t = track_ids[k]
                history.guides[t], history.faces[t] = guides[j], steadied[k].clone()
                history.times[t] = now
            history.last_time = now
        history.end(faces.ended_tracks)
        return batch.with_faces(restored=steadied)

    def _blend(self, restored: torch.Tensor, guides: list[np.ndarray],
               previous_guides: list[np.ndarray], previous: torch.Tensor) -> torch.Tensor:
        """restored: this frame's faces, (J, 3, S, S); guides: their input crops' flow
        guides; previous_guides, previous: the frame before's guides and steadied faces of
        the same tracks."""
        grid, valid = self._flow(previous_guides, guides, restored.shape[-1], restored.device)
        warped = F.grid_sample(previous, grid, mode="bilinear", padding_mode="border",
                               align_corners=True)
        luma = torch.tensor(_LUMA, dtype=restored.dtype, device=restored.device)
        change = torch.einsum("c,kchw->khw", luma, restored - warped).abs()[:, None]
        local = F.avg_pool2d(change, BLUR_PX, stride=1, padding=BLUR_PX // 2,
                             count_include_pad=False)
        weight = self.strength * (1 - local / self.threshold).clamp_(0, 1) * valid
        return torch.lerp(restored, warped, weight)

    def _flow(self, previous: list[np.ndarray], current: list[np.ndarray], size: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each pixel of a size x size crop was in the crop before, from DIS between
        the two crops' flow guides: (J, S, S, 2) grid_sample coordinates and a (J, 1, S, S)
        float mask of the pixels whose flow holds."""
        grids, masks = [], []
        for a, b in zip(previous, current, strict=True):
            motion = self._motion(a, b)
            grids.append(np.stack([motion.source_x, motion.source_y], -1))
            masks.append(motion.valid)
        grid = torch.from_numpy(np.stack(grids)).to(device).permute(0, 3, 1, 2)
        # small-image sample positions -> full-size ones (pixel centres), then to [-1, 1]
        grid = F.interpolate(grid * FLOW_SCALE + (FLOW_SCALE - 1) / 2, size=(size, size),
                             mode="bilinear", align_corners=False)
        grid = (grid / (size - 1) * 2 - 1).permute(0, 2, 3, 1)
        valid = torch.from_numpy(np.stack(masks)).to(device)[:, None].float()
        return grid, F.interpolate(valid, size=(size, size), mode="nearest")


def flow_guides(faces: torch.Tensor) -> list[np.ndarray]:
    """(J, 3, S, S) float [0, 1] -> J (S/FLOW_SCALE, S/FLOW_SCALE, 3) uint8 RGB host images,
    blurred: what the flow is measured on."""
    small = F.avg_pool2d(faces.float(), FLOW_SCALE).clamp(0, 1).mul(255).round().to(torch.uint8)
    images = small.permute(0, 2, 3, 1).cpu().numpy()
    return [cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), FLOW_SIGMA) for x in images]
