"""Colour flicker: how much the mean colour of a face changes from one frame to the next.

A face's colour is the mean CIE L*a*b* colour (D65 white, frames read as sRGB) of its inner
face: the quadrilateral whose corners lie `INSET` of the way from each eye to the mouth corner
below it and from each mouth corner to the eye above it, i.e. cheeks and nose without the
eyes, brows and lips, whose colour changes with blinks and speech. The corners come from the
5 landmarks (left eye, right eye, nose, left and right mouth corners) in the frame's pixels.

Flicker is the mean, over pairs of consecutive frames that both show the face, of the distance
between their mean colours: the Euclidean distance in L*a*b* (CIE76 delta E; about 2.3 is a
just-noticeable difference between two patches side by side), and per channel the mean
absolute change of L*, a* and b*. Slow drifts count too, at their per-frame size, so compare a
restored video's flicker with its input's over the same region and frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

INSET = 0.25  # share of the eye-to-mouth distance cut from the top and bottom of the region
MIN_PIXELS = 16  # fewer pixels inside the region than this give no colour (a face too small)

# sRGB (IEC 61966-2-1) to CIE XYZ, D65, and the D65 white. OpenCV's float RGB2Lab is not used:
# it works in fixed point (a* and b* in steps of 1/64; L* of an 8-bit grey off by up to 0.2),
# about the size of the changes measured here.
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = _SRGB_TO_XYZ.sum(axis=1)
_CODES = np.arange(256) / 255
_LINEAR = np.where(_CODES <= 0.04045, _CODES / 12.92, ((_CODES + 0.055) / 1.055) ** 2.4)


@dataclass(frozen=True)
class ColourFlicker:
    """Mean frame-to-frame change of the mean face colour.

    delta_e: mean CIE76 distance in L*a*b*; lab: mean absolute change of L*, a* and b*;
    pairs: how many consecutive frame pairs were measured.
    """

    delta_e: float
    lab: tuple[float, float, float]
    pairs: int

    def as_dict(self) -> dict:
        return {"delta_e": round(self.delta_e, 4),
                "lab": [round(x, 4) for x in self.lab], "pairs": self.pairs}


def inner_face_polygon(landmarks: np.ndarray, inset: float = INSET) -> np.ndarray:
    """(4, 2) float corners (clockwise on screen) of the inner face from (5, 2) landmarks."""
    eye_l, eye_r, _nose, mouth_l, mouth_r = np.asarray(landmarks, dtype=np.float64)
    return np.stack([eye_l + inset * (mouth_l - eye_l), eye_r + inset * (mouth_r - eye_r),
                     mouth_r + inset * (eye_r - mouth_r), mouth_l + inset * (eye_l - mouth_l)])


def mean_lab(frame: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Mean L*a*b* of the pixels of an (H, W, 3) uint8 RGB frame inside a polygon (in pixel
    coordinates, pixel centres at integers); NaNs when fewer than MIN_PIXELS are inside."""
    height, width = frame.shape[:2]
    x0, y0 = np.floor(polygon.min(0)).astype(int).clip(0, [width, height])
    x1, y1 = (np.ceil(polygon.max(0)).astype(int) + 1).clip(0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return np.full(3, np.nan)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # fillPoly takes fixed-point corners: 8 fractional bits keep sub-pixel landmarks
    corners = np.round((polygon - [x0, y0]) * 256).astype(np.int32)
    cv2.fillPoly(mask, [corners], 1, lineType=cv2.LINE_8, shift=8)
    inside = mask.astype(bool)
    if inside.sum() < MIN_PIXELS:
        return np.full(3, np.nan)
    return srgb_to_lab(frame[y0:y1, x0:x1][inside]).mean(0)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB -> (..., 3) float64 CIE L*a*b* (D65): L* 0-100, a*, b* about
    -128..127."""
    xyz = _LINEAR[rgb] @ _SRGB_TO_XYZ.T / _WHITE_D65
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def face_colours(frames: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None],
                 inset: float = INSET) -> np.ndarray:
    """(T, 3) mean L*a*b* of the inner face in each frame; a NaN row where `landmarks` is
    None (no face in that frame) or the region is too small. Landmarks are (5, 2) in the
    frames' own pixels."""
    rows = [np.full(3, np.nan) if marks is None else
            mean_lab(frame, inner_face_polygon(marks, inset))
            for frame, marks in zip(frames, landmarks, strict=True)]
    return np.stack(rows) if rows else np.zeros((0, 3))


def colour_flicker(colours: np.ndarray) -> ColourFlicker:
    """Flicker of a (T, 3) L*a*b* series (NaN rows: frames without the face); NaN figures
    when no two consecutive frames have the face."""
    steps = np.diff(np.asarray(colours, dtype=np.float64), axis=0)
    steps = steps[~np.isnan(steps).any(axis=1)]
    if not len(steps):
        return ColourFlicker(float("nan"), (float("nan"),) * 3, 0)
    per_channel = np.abs(steps).mean(0)
    return ColourFlicker(float(np.linalg.norm(steps, axis=1).mean()),
                         tuple(float(x) for x in per_channel), len(steps))
