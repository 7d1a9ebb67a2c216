"""Align: the face path's warp. The faces the tracker did not skip, cut from the input frames
along their smoothed landmarks into FFHQ-aligned crops, all with one `warp_faces` call."""

from __future__ import annotations

import dataclasses

import torch

from ..batch import FaceSet, FrameBatch
from .align import similarity_transforms, warp_faces

FACE_SIZE = 512  # GFPGAN's and RestoreFormer's aligned crop, FFHQ template


class FaceAlignment:
    """batch.faces (tracked) -> the same faces with restore_index, crop_frames, affines and
    crops (K, 3, S, S) float32 RGB in [0, 1] on `device` for the K faces not skipped."""

    name = "align"

    def __init__(self, device: torch.device, size: int = FACE_SIZE) -> None:
        self.device, self.size = device, size

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        chosen = [i for i, reason in enumerate(faces.skipped) if reason is None]
        return dataclasses.replace(batch, faces=align(batch.inputs, faces, chosen, self.size))


def align(frames: torch.Tensor, faces: FaceSet, chosen: list[int], size: int = FACE_SIZE
          ) -> FaceSet:
    """`faces` with the faces `chosen` (indices among them) aligned from `frames`."""
    index = torch.tensor(chosen, dtype=torch.int64)
    landmarks = faces.landmarks[index] if chosen else torch.zeros(0, 5, 2)
    affines = similarity_transforms(landmarks.to(frames.device))
    crop_frames = faces.frame_index[index].to(frames.device)
    crops = warp_faces(frames, crop_frames, affines, size)
    return dataclasses.replace(faces, restore_index=index, crop_frames=crop_frames,
                               affines=affines, crops=crops)
