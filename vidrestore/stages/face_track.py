"""Detect and track: the face path's first stage. One detector pass over the batch, then
the tracker frame by frame in order (track ids, One-Euro smoothed landmarks, skip reasons,
scene cuts); its result starts the batch's `FaceSet`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..batch import FaceSet, FrameBatch
from ..config import TrackConfig
from .detect import Detections, FaceDetector
from .track import FaceTracker, TrackedFace, detect_scene_cuts


@dataclass
class FaceTrackState:
    """What detect-and-track remembers between batches of one stream."""

    tracker: FaceTracker
    previous_frame: torch.Tensor | None = None  # (3, H, W): the last batch's last input


class FaceTracking:
    """A `StreamStage`: batch.inputs (N, 3, H, W) float RGB in [0, 1] on the detector's
    device -> the batch with a new `FaceSet` of every face tracked (nothing aligned yet)."""

    name = "detect"

    def __init__(self, detector: FaceDetector, config: TrackConfig) -> None:
        self.detector, self.scene_cut_threshold = detector, config.scene_cut_threshold
        self.state = FaceTrackState(FaceTracker(config))

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        detections = self.detector(batch.inputs)
        tracked, ended = self.track(batch.inputs, batch.times_s, detections)
        return dataclasses.replace(batch, faces=face_set(tracked, ended))

    def track(self, frames: torch.Tensor, times_s: Sequence[float],
              detections: Sequence[Detections]) -> tuple[list[list[TrackedFace]], set[int]]:
        """Per frame, in order: the tracked faces; and the ids of tracks that ended."""
        state = self.state
        cuts = detect_scene_cuts(frames, state.previous_frame, self.scene_cut_threshold)
        state.previous_frame = frames[-1].clone()  # the input buffer is reused
        tracked, ended = [], set()
        for found, time_s, cut in zip(detections, times_s, cuts, strict=True):
            before = state.tracker.track_ids
            tracked.append(state.tracker.update(found, time_s, cut))
            ended |= before - state.tracker.track_ids
        return tracked, ended


def face_set(tracked: Sequence[Sequence[TrackedFace]], ended: set[int] = frozenset()
             ) -> FaceSet:
    """The `FaceSet` of per-frame tracked faces, flattened in frame order."""
    faces = [(n, face) for n, frame in enumerate(tracked) for face in frame]

    def stacked(attr: str, shape: tuple[int, ...]) -> torch.Tensor:
        if not faces:
            return torch.zeros(0, *shape)
        return torch.stack([getattr(face, attr) for _, face in faces])

    return FaceSet(frame_index=torch.tensor([n for n, _ in faces], dtype=torch.int64),
                   track_ids=tuple(f.track_id for _, f in faces),
                   boxes=stacked("box", (4,)), landmarks_raw=stacked("landmarks_raw", (5, 2)),
                   landmarks=stacked("landmarks", (5, 2)),
                   scores=tuple(f.score for _, f in faces),
                   skipped=tuple(f.skipped for _, f in faces),
                   predicted=tuple(f.predicted for _, f in faces), ended_tracks=frozenset(ended))
