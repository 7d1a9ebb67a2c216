"""Face detection: RetinaFace over a whole batch of frames in one forward pass.

Frames larger than `input_size` are scaled down (aspect kept) so that their longest side is
`input_size`; the batch is padded at the right and bottom to a multiple of 32 and goes through
the network together. Boxes and landmarks are decoded on the device, filtered by score,
de-duplicated with per-frame NMS (one `batched_nms` call for the whole batch) and mapped back
to frame pixels.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ..models.arch.retinaface import (
    MEAN_BGR,
    RetinaFace,
    decode_boxes,
    decode_landmarks,
    fuse_batchnorm,
    prior_boxes,
)

log = logging.getLogger(__name__)

PAD_MULTIPLE = 32  # the coarsest feature stride: padded sizes keep every level's grid exact


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, best score first, in that frame's pixel coordinates.

    boxes: (K, 4) float32 x1, y1, x2, y2 (not clipped to the frame).
    landmarks: (K, 5, 2) float32 x, y of left eye, right eye, nose tip, left and right mouth
        corner, "left"/"right" as seen in the image (RetinaFace's order).
    scores: (K,) float32 face probabilities.
    All three live on the detector's device.
    """

    boxes: torch.Tensor
    landmarks: torch.Tensor
    scores: torch.Tensor

    def __post_init__(self) -> None:
        k = self.scores.shape[0]
        if self.boxes.shape != (k, 4) or self.landmarks.shape != (k, 5, 2):
            raise ValueError(f"inconsistent detections: boxes {tuple(self.boxes.shape)}, "
                             f"landmarks {tuple(self.landmarks.shape)}, scores ({k},)")

    def __len__(self) -> int:
        return self.scores.shape[0]


class FaceDetector:
    """RetinaFace detector for batches of frames on one device.

    model: a loaded `RetinaFace` (MobileNet-0.25 or ResNet-50), as the model factory gives
        it (`load_model(store, name, "detector")`); the detector fuses a copy of it.
    input_size: bound on the longest side of the working resolution, in pixels. Larger
        frames are scaled down to it (aspect kept), so the cost per frame is bounded; smaller
        ones run at their own size, since upscaling adds cost but no detail and pushes big
        faces past the largest anchor (512 px).
    score_threshold: minimum face probability kept.
    nms_iou: boxes of one frame overlapping a better one by more than this IoU are dropped.
    """

    def __init__(self, model: RetinaFace, device: torch.device | str = "cpu",
                 input_size: int = 640,
                 score_threshold: float = 0.5, nms_iou: float = 0.4):
        if input_size < PAD_MULTIPLE:
            raise ValueError(f"input_size must be at least {PAD_MULTIPLE}, got {input_size}")
        self.device = torch.device(device)
        if not isinstance(model, RetinaFace):
            raise TypeError(f"FaceDetector takes a loaded RetinaFace, got {type(model).__name__}"
                            "; load it with vidrestore.models.factory.load_model")
        # fusing works in place: the caller's module stays as it was
        self.model = fuse_batchnorm(copy.deepcopy(model).eval()).to(self.device)
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._priors: dict[tuple[int, int], torch.Tensor] = {}  # per padded working size

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> list[Detections]:
        """frames: (N, 3, H, W) float RGB in [0, 1] on the detector's device.

        Returns one `Detections` per frame, in frame pixels.
        """
        _check_frames(frames, self.device)
        if frames.shape[0] == 0:
            return []
        inputs, (scale_y, scale_x) = self._network_input(frames)
        loc, conf, marks = self.model(inputs)
        priors = self._priors_for(*inputs.shape[-2:])
        pad_h, pad_w = inputs.shape[-2:]
        # normalised -> padded working pixels -> frame pixels
        to_frame = torch.tensor([pad_w / scale_x, pad_h / scale_y], device=self.device)
        boxes = decode_boxes(loc, priors) * to_frame.repeat(2)
        points = decode_landmarks(marks, priors) * to_frame
        return self._select(boxes, points, conf[..., 1])

    def _network_input(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
        """Resize to the working size, RGB [0,1] -> BGR 0..255 minus the mean, pad with zeros
        (the mean colour), and return the per-axis scales actually applied."""
        height, width = frames.shape[-2:]
        scale = min(1.0, self.input_size / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = frames.float()
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=scale < 1)
        mean = torch.tensor(MEAN_BGR, device=x.device).view(1, 3, 1, 1)
        x = x.flip(1) * 255.0 - mean
        pad_h, pad_w = (-size[0]) % PAD_MULTIPLE, (-size[1]) % PAD_MULTIPLE
        x = F.pad(x, (0, pad_w, 0, pad_h))
        return x, (size[0] / height, size[1] / width)

    def _priors_for(self, height: int, width: int) -> torch.Tensor:
        if (height, width) not in self._priors:
            log.debug("RetinaFace priors for %dx%d", width, height)
            self._priors[height, width] = prior_boxes(height, width).to(self.device)
        return self._priors[height, width]

    def _select(self, boxes: torch.Tensor, points: torch.Tensor,
                scores: torch.Tensor) -> list[Detections]:
        """Threshold and NMS across the batch at once; frame index keeps frames apart."""
        frame_idx, prior_idx = torch.nonzero(scores > self.score_threshold, as_tuple=True)
        kept_boxes, kept_scores = boxes[frame_idx, prior_idx], scores[frame_idx, prior_idx]
        keep = batched_nms(kept_boxes, kept_scores, frame_idx, self.nms_iou)  # score order
        frame_idx, prior_idx = frame_idx[keep], prior_idx[keep]
        out = []
        for n in range(scores.shape[0]):
            mine = prior_idx[frame_idx == n]
            out.append(Detections(boxes[n, mine], points[n, mine], scores[n, mine]))
        return out


def _check_frames(frames: torch.Tensor, device: torch.device) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
        raise ValueError(f"frames must be float (N, 3, H, W) RGB in [0, 1], got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    if frames.device.type != device.type:
        raise ValueError(f"frames are on {frames.device}, the detector on {device}; "
                         "move them with .to(device) first")
