"""Paste: the restored faces warped back onto the upscaled background (inverse warp,
feathered and parsing masks), all faces of the batch in one `paste_faces` call."""

from __future__ import annotations

import dataclasses

from ..batch import FrameBatch
from .align import paste_faces


class FacePaste:
    """batch.output (N, 3, sH, sW) float RGB in [0, 1] -> a new output with faces.restored
    pasted; faces.background keeps the output as it was, for the figures that compare."""

    name = "paste"

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        if batch.output is None:
            raise ValueError("the face path pastes onto the background: run that stage first")
        faces = batch.faces
        output = batch.output
        if faces.restored_count:
            output = paste_faces(batch.output, faces.restored, faces.crop_frames, faces.affines,
                                 batch.scale, faces.paste_masks)
        return dataclasses.replace(batch, output=output,
                                   faces=dataclasses.replace(faces, background=batch.output))
