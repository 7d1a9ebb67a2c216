"""The face path as one pipeline step: its stages in the order of the design's diagram,
detect+track -> align -> restore -> (parse) -> colour -> (temporal) -> (identity guard) ->
paste, then the observers that measure and log (identity, figures, LPIPS). Each is a small
stage over the batch's `FaceSet`; `FacePath` only runs them in order and times each
("faces.<name>" in the frames' timings, per frame). `build_face_path` is the plain
function that lines them up.

All faces of a batch travel together: one detector pass over the frames, one warp for all
crops, one restorer call, one parse, one colour update, one paste call. Only the tracker goes
frame by frame, in frame order, on the host (a handful of boxes a frame). Faces are pasted
onto `batch.output`, the upscaled background, so the background stage runs first.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..batch import FrameBatch
from ..config import FaceConfig
from ..metrics.face_figures import LPIPS_REASON, FaceIdentity, FaceLpips, FaceRecords
from ..metrics.identity import IdentityEncoder
from ..metrics.perceptual import Lpips
from ..models.arch.parsenet import ParseNet
from . import Stage, StreamStage
from .detect import FaceDetector
from .face_align import FaceAlignment
from .face_colour import FaceColour
from .face_parse import FaceParsing
from .face_paste import FacePaste
from .face_restore import FaceRestoration, Restorer
from .face_temporal import FaceTemporal
from .face_track import FaceTracking
from .identity_guard import IdentityGuard


@dataclass
class FaceModels:
    """The networks of the face path, loaded and on the stage's device (identity: host)."""

    detector: FaceDetector
    restorer: Restorer
    parser: ParseNet | None = None
    identity: IdentityEncoder | None = None
    lpips: Lpips | None = None
    lpips_reason: str = LPIPS_REASON  # why there is no `lpips` metric, for the log


def build_face_path(config: FaceConfig, models: FaceModels, device: torch.device) -> FacePath:
    """The face path's stages and observers for `config`, in order."""
    stages: list[Stage] = [FaceTracking(models.detector, config.track), FaceAlignment(device),
                           FaceRestoration(models.restorer)]
    if models.parser is not None:
        stages.append(FaceParsing(models.parser))
    stages.append(FaceColour(config.colour_strength, config.colour_history, device))
    # a restorer that hands faces back as they came adds nothing to steady, and the input
    # face must come back as it was (passthrough, fidelity 0); any other callable changes them
    if config.temporal_strength > 0 and getattr(models.restorer, "changes_faces", True):
        stages.append(FaceTemporal(config.temporal_strength, config.temporal_threshold))
    if models.identity is not None and config.identity_guard:
        stages.append(IdentityGuard(models.identity))
    stages.append(FacePaste())
    if models.identity is not None and not config.identity_guard:
        stages.append(FaceIdentity(models.identity))
    stages.append(FaceRecords(models.lpips_reason))
    if models.lpips is not None:
        stages.append(FaceLpips(models.lpips))
    return FacePath(stages, device)


class FacePath:
    """A `StreamStage` named "faces": `stages` in order over each batch. batch.inputs
    (N, 3, H, W) and batch.output (N, 3, sH, sW), float RGB in [0, 1] on `device`; returns the
    batch with the faces pasted into a new output, its `FaceSet`, and each frame's note
    extended with "faces", "sharpness" and "timings_ms" (see `metrics.face_figures`).

    Its `state` is the tuple of its stream stages' states (tracker, colour history), so the
    runner's retry snapshot sees all of them."""

    name = "faces"

    def __init__(self, stages: Sequence[Stage], device: torch.device) -> None:
        self.stages, self.device = list(stages), device
        self._streams = [s for s in self.stages if isinstance(s, StreamStage)]

    @property
    def state(self) -> tuple[Any, ...]:
        return tuple(stage.state for stage in self._streams)

    @state.setter
    def state(self, states: tuple[Any, ...]) -> None:
        for stage, state in zip(self._streams, states, strict=True):
            stage.state = state

    def part(self, name: str) -> Stage:
        """The stage called `name` (e.g. "colour")."""
        (stage,) = [s for s in self.stages if s.name == name]
        return stage

    @torch.no_grad()
    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        if batch.output is None:
            raise ValueError("the face stage pastes onto the background: run that stage first")
        ms: dict[str, float] = {}
        for stage in self.stages:
            started = time.perf_counter()
            batch = stage(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            ms[f"faces.{stage.name}"] = (time.perf_counter() - started) * 1000 / len(batch)
        notes = tuple({**note, "timings_ms": {**note.get("timings_ms", {}), **ms}}
                      for note in batch.notes)
        return dataclasses.replace(batch, notes=notes)
