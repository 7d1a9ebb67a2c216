"""Colour: each restored face given its input face's colour statistics, smoothed per track
(`ColourConsistency`); the face path's second piece of stream state."""

from __future__ import annotations

import dataclasses

import torch

from ..batch import FrameBatch
from .colour import ColourConsistency
from .face_align import FACE_SIZE


class FaceColour:
    """A `StreamStage`: faces.restored (K, 3, S, S) float RGB in [0, 1] -> colour-matched,
    measured inside the parsing masks when there are any, else a template face ellipse.
    `state` is the per-track colour history; tracks that ended in the batch are forgotten."""

    name = "colour"

    def __init__(self, strength: float, history_frames: float, device: torch.device,
                 size: int = FACE_SIZE) -> None:
        self.state = ColourConsistency(strength, history_frames)
        self._template_mask = template_face_mask(size, device)

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        if faces.restored_count:
            masks = faces.paste_masks if faces.paste_masks is not None else \
                self._template_mask.expand(faces.restored_count, -1, -1, -1)
            track_ids = [faces.track_ids[i] for i in faces.restore_index.tolist()]
            matched = self.state(track_ids, faces.restored, faces.crops, masks)
            faces = dataclasses.replace(faces, restored=matched)
        self.state.end(faces.ended_tracks)
        return dataclasses.replace(batch, faces=faces)


def template_face_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, size, size) float32 soft ellipse over the face of an FFHQ-aligned crop: where
    colour statistics are measured when there is no parsing mask (skin, not background)."""
    axis = torch.linspace(-1, 1, size, device=device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    radius = (xx / 0.6).square() + ((yy - 0.05) / 0.75).square()
    return ((1.5 - radius).clamp(0, 0.5) * 2)[None, None]
