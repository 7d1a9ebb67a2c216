"""Host-side records that move between the decode, device and encode threads."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One decoded frame, upright, as uint8 RGB (H, W, 3) on the host.

    `pts` is in `time_base` units of the source stream and travels unchanged to the encoder,
    and so does `duration` (the last frame's would otherwise be guessed from the rate).
    `alpha` (H, W) uint8 is set only for still images that carry transparency.
    """

    index: int
    image: np.ndarray
    pts: int
    time_base: Fraction
    warnings: list[str] = field(default_factory=list)
    alpha: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    duration: int = 0  # in `time_base` units; 0 when the source does not say

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"frame image must be uint8 (H, W, 3), got {self.image.dtype} "
                             f"{self.image.shape}")

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


@dataclass
class OutputFrame:
    """A processed frame ready for the sink, with its per-frame log record."""

    source: Frame
    image: np.ndarray
    record: dict[str, Any]
