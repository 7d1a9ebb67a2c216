"""Restore: the aligned crops of a batch through the face restorer (one call for all faces,
chunked only by the restorer's own memory bound), into `FaceSet.restored`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..batch import FrameBatch

Restorer = Callable[[torch.Tensor], torch.Tensor]  # (K, 3, S, S) [0, 1] -> same


class FaceRestoration:
    """batch.faces.crops (K, 3, S, S) float RGB in [0, 1] -> faces.restored, same shape and
    device. `restorer`: `FaceRestorer`, `PassthroughRestorer` or any such callable."""

    name = "restore"

    def __init__(self, restorer: Restorer) -> None:
        self.restorer = restorer

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        if not faces.restored_count:
            return batch
        restored = self.restorer(faces.crops)
        return batch.with_faces(restored=restored)
