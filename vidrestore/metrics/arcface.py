"""ArcFace identity embeddings: insightface's buffalo_l recogniser (w600k_r50.onnx) run by
onnxruntime, preprocessed the way insightface's `ArcFaceONNX` does it.

Per face: a least-squares similarity from its 5 landmarks to the ArcFace template
(insightface `face_align.estimate_norm`: the 112 px points below), `cv2.warpAffine` to
112 x 112 (bilinear, black outside, as `norm_crop`), RGB, (x - 127.5) / 127.5 (the
`input_mean` / `input_std` insightface uses for models without their own Sub/Mul, which
w600k_r50 is). All faces of a call go through the network in one session run; the 512-D
outputs are L2-normalised. The session comes from the model factory (`models/factory.py`,
role `identity`), which reads the recogniser from buffalo_l.zip with its digest checked.

The `insightface` package itself is not used: it would bring scikit-image, onnx and requests
for five template points and one transform estimate, which `similarity_transforms` already
computes batched (the same Umeyama solution as skimage's `SimilarityTransform.estimate`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import ModelError
from ..face_geometry import similarity_transforms
from ..models.arch.arcface_onnx import ARCFACE_MEMBER, arcface_graph
from ..models.factory import ARCFACE_MODEL
from .faces import LandmarkedFace, rgb_uint8

log = logging.getLogger(__name__)

__all__ = ["ARCFACE_MEMBER", "ARCFACE_MODEL", "ArcFaceEncoder", "arcface_template"]

# insightface utils/face_align.py `arcface_dst`: left eye, right eye, nose tip, left and right
# mouth corner (as seen) in the 112 x 112 crop; RetinaFace's landmark order.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
INPUT_MEAN, INPUT_STD = 127.5, 127.5

# insightface's own buffalo_l verification demo (web-demos/src_recognition/main.py, which
# loads w600k_r50.onnx) reads cosine < 0.2 as "NOT the same person", 0.2-0.28 as "LIKELY"
# and >= 0.28 as "ARE the same person". The last cut is the threshold here.
ARCFACE_COSINE_THRESHOLD = 0.28


def arcface_template(size: int) -> np.ndarray:
    """(5, 2) template for a size x size crop, as insightface's `estimate_norm` scales it
    (multiples of 112 scale the 112 points; multiples of 128 scale them and shift x by 8)."""
    if size % 112 == 0:
        return ARCFACE_TEMPLATE_112 * (size / 112)
    if size % 128 == 0:
        return ARCFACE_TEMPLATE_112 * (size / 128) + np.array([8 * size / 128, 0], np.float32)
    raise ModelError(f"ArcFace input size {size} is neither a multiple of 112 nor of 128")


class ArcFaceEncoder:
    """insightface ArcFace R50 (WebFace600K), 512-D, on faces aligned to its 112 px template.

    `session` is the onnxruntime session the model factory opened (`load_model(store,
    "arcface-buffalo_l", "identity")`); its input and output names and the input size are
    read from it, and its batch axis must be dynamic (it is in w600k_r50.onnx).
    origin: where the model came from, for the summary (the factory's `describe()`).
    """

    name = ARCFACE_MODEL
    threshold = ARCFACE_COSINE_THRESHOLD

    def __init__(self, session, *, origin: dict[str, Any] | None = None):
        graph = arcface_graph(session)
        self._session = session
        self._input, self._output = graph.input, graph.output
        self.size, self.dim = graph.size, graph.dim
        self.origin = origin or {"name": self.name, "source": "session"}
        self._template = torch.from_numpy(arcface_template(self.size))

    def embed(self, faces: Sequence[LandmarkedFace], /) -> np.ndarray:
        """(K, D) float32 unit-norm embeddings of `faces`, one session run for all."""
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        chips = self.chips(faces)
        blob = (chips.transpose(0, 3, 1, 2).astype(np.float32) - INPUT_MEAN) / INPUT_STD
        raw = self._session.run([self._output], {self._input: blob})[0].astype(np.float32)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)

    def describe(self) -> dict[str, Any]:
        """Where the model came from, for the run summary."""
        return {**self.origin, "threshold": self.threshold}

    def chips(self, faces: Sequence[LandmarkedFace]) -> np.ndarray:
        """(K, S, S, 3) uint8 RGB crops aligned to the ArcFace template, what the network sees.

        The transforms are estimated for all faces at once; each face is then warped from its
        own image (images may differ in size)."""
        landmarks = np.stack([_landmarks(lm) for _, lm in faces])
        affines = similarity_transforms(torch.from_numpy(landmarks), self._template).numpy()
        size = (self.size, self.size)
        return np.stack([cv2.warpAffine(rgb_uint8(image), affine.astype(np.float64), size,
                                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                        borderValue=0)
                         for (image, _), affine in zip(faces, affines, strict=True)])


def _landmarks(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2), got {points.shape}")
    return points
