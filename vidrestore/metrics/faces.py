"""A face as identity encoders take it: an image and its 5 landmarks (shared by the dlib and
ArcFace encoders, so neither imports the other)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LandmarkedFace(NamedTuple):
    """image: (H, W, 3) uint8 RGB. landmarks: (5, 2) float x, y in that image's pixels,
    RetinaFace order: left eye, right eye, nose tip, left, right mouth corner (as seen)."""

    image: np.ndarray
    landmarks: np.ndarray


def rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
