"""Parse: ParseNet over the restored crops, giving each face a soft paste mask (skin, brows,
eyes, nose, mouth; not hair or background), made as facexlib's FaceRestoreHelper makes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import FrameBatch
from ..models.arch.parsenet import ParseNet, face_mask_from_parsing

# facexlib's paste mask from parsing: Gaussian blur (101 px, sigma 11) twice, 10 px border 0
PARSE_BLUR_TAPS, PARSE_BLUR_SIGMA, PARSE_BLUR_PASSES, PARSE_BORDER_PX = 101, 11.0, 2, 10


class FaceParsing:
    """batch.faces.restored (K, 3, S, S) float RGB in [0, 1] -> faces.paste_masks
    (K, 1, S, S) float32 in [0, 1], on the parser's device."""

    name = "parse"

    def __init__(self, parser: ParseNet) -> None:
        self.parser = parser

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        if not faces.restored_count:
            return batch
        dtype = next(self.parser.parameters()).dtype
        logits = self.parser.parse((faces.restored * 2 - 1).to(dtype))
        masks = soften_parse_mask(face_mask_from_parsing(logits))
        return batch.with_faces(paste_masks=masks)


def soften_parse_mask(hard: torch.Tensor) -> torch.Tensor:
    """(K, 1, S, S) 0/1 face mask -> soft paste mask, as facexlib's FaceRestoreHelper makes it
    (two 101-tap Gaussian blurs, sigma 11, reflected borders; then a 10 px border of 0), in
    face space and batched: the mask is warped with the face afterwards."""
    taps = torch.arange(PARSE_BLUR_TAPS, dtype=torch.float32, device=hard.device)
    kernel = torch.exp(-0.5 * ((taps - PARSE_BLUR_TAPS // 2) / PARSE_BLUR_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    pad = PARSE_BLUR_TAPS // 2
    mask = hard.float()
    for _ in range(PARSE_BLUR_PASSES):
        mask = F.conv2d(F.pad(mask, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        mask = F.conv2d(F.pad(mask, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
    border = PARSE_BORDER_PX
    keep = torch.zeros_like(mask)
    keep[..., border:-border, border:-border] = 1
    return mask * keep
