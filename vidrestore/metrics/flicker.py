"""Temporal flicker: the warping error between consecutive frames, with optical flow.

As in Lai et al., "Learning Blind Video Temporal Consistency" (ECCV 2018): the motion from
frame t-1 to frame t is estimated on the *reference* video, its occluded and out-of-frame
pixels are masked out, and frame t-1 of any video of the same scene (the reference itself,
a restored version) is warped onto frame t with it. What the warp does not explain is
flicker. The reference's own figure is the floor (flow is never perfect, light changes);
a restoration adds flicker when its figure is above the reference's.

The flow is OpenCV's DIS (Kroeger et al. 2016) on the luma, in both directions; a pixel
counts when the two agree (Sundaram et al. 2010: |f + b|^2 <= 0.01 (|f|^2 + |b|^2) + 0.5).
The error is the root-mean-square difference over the counted pixels and the three
channels, in 8-bit levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


@dataclass(frozen=True)
class Motion:
    """Where each pixel of frame t came from in frame t-1.

    source_x, source_y: (H, W) float32 sampling positions in frame t-1 (for `cv2.remap`).
    valid: (H, W) bool, pixels seen in both frames with consistent flow.
    """

    source_x: np.ndarray
    source_y: np.ndarray
    valid: np.ndarray

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean())


class MotionEstimator:
    """DIS optical flow between consecutive uint8 RGB frames, with an occlusion mask."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESET)

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> Motion:
        """previous, current: (H, W, 3) uint8 RGB of the same size."""
        if previous.shape != current.shape:
            raise ValueError(f"frames differ in size: {previous.shape} and {current.shape}")
        prev_y = cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY)
        cur_y = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
        backward = self._dis.calc(cur_y, prev_y, None)  # at t, pointing into t-1
        forward = self._dis.calc(prev_y, cur_y, None)  # at t-1, pointing into t
        height, width = cur_y.shape
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                     np.arange(height, dtype=np.float32))
        source_x, source_y = grid_x + backward[..., 0], grid_y + backward[..., 1]
        # the forward flow where each pixel lands in t-1 should bring it straight back
        returned = cv2.remap(forward, source_x, source_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        round_trip = np.square(backward + returned).sum(-1)
        size = np.square(backward).sum(-1) + np.square(returned).sum(-1)
        inside = ((source_x >= 0) & (source_x <= width - 1)
                  & (source_y >= 0) & (source_y <= height - 1))
        valid = inside & (round_trip <= 0.01 * size + 0.5)
        return Motion(source_x, source_y, valid)


def warping_error(previous: np.ndarray, current: np.ndarray, motion: Motion) -> float:
    """RMS difference, 8-bit levels, between `current` and `previous` warped by `motion`
    over the valid pixels; NaN when no pixel is valid."""
    if not motion.valid.any():
        return float("nan")
    warped = cv2.remap(previous.astype(np.float32), motion.source_x, motion.source_y,
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = warped[motion.valid] - current.astype(np.float32)[motion.valid]
    return float(np.sqrt(np.mean(np.square(diff))))
