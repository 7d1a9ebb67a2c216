"""Identity embeddings: does a restored face still show the same person?

An encoder takes faces as (image, 5 landmarks) pairs, `LandmarkedFace`, and returns one
L2-normalised embedding per face; `cosine` compares them and the encoder's `threshold` says
from which cosine on two faces count as the same person.

Why pairs rather than ready-made aligned crops: each encoder must align faces the way it was
trained (dlib: its own 5 points, 150 px chip with 25 % padding; ArcFace: a 112 px template),
so a crop aligned for one is wrong for the next. A pair serves every encoder, and covers
both ends of the pipeline: a frame with the detector's landmarks, and an aligned (e.g.
restored 512 px FFHQ) crop with the template points it was aligned to.

Two encoders: ArcFace (insightface buffalo_l, `metrics/arcface.py`) when its weights are in
the model store, and dlib's ResNet descriptor (bundled) otherwise; `open_identity_encoder`
picks one and has the model factory (role `identity`) load its network, which the encoder
classes take ready-made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from ..config import IDENTITY_ENCODERS
from ..errors import ConfigError
from ..models.arch.dlib_face import DlibFaceModels
from ..models.factory import ARCFACE_MODEL, DLIB_DESCRIPTOR, load_model
from ..models.store import ModelStore
from .faces import LandmarkedFace, rgb_uint8

__all__ = ["IdentityEncoder", "LandmarkedFace", "cosine", "open_identity_encoder", "rgb_uint8"]

log = logging.getLogger(__name__)


class IdentityEncoder(Protocol):
    name: str
    threshold: float  # cosine at or above which two embeddings are taken as one person

    def embed(self, faces: Sequence[LandmarkedFace], /) -> np.ndarray:
        """(K, D) float32 embeddings, unit L2 norm, one row per face in order."""
        ...


def open_identity_encoder(store: ModelStore, choice: str = "auto",
                          device: torch.device | str | None = None) -> IdentityEncoder:
    """The identity encoder `choice` names, its network loaded by the model factory.

    "auto": ArcFace when buffalo_l.zip is in the store's cache (checked against its digest;
    nothing is downloaded), else the bundled dlib encoder. "arcface": ArcFace, downloaded
    when the store may download; otherwise a one-line `ModelError` saying how to get it.
    "dlib": the bundled dlib encoder.
    device: where ArcFace's session runs (default: CUDA when there is one); dlib runs on
    the CPU.
    """
    if choice not in IDENTITY_ENCODERS:
        raise ConfigError(f"identity encoder {choice!r} is not one of {list(IDENTITY_ENCODERS)}")
    if choice == "arcface" or (choice == "auto" and store.path_for(ARCFACE_MODEL).is_file()):
        from .arcface import ARCFACE_MEMBER, ArcFaceEncoder  # onnxruntime only when used

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model(store, ARCFACE_MODEL, "identity", device,
                            option="identity encoder", allow_fallback=False)
        origin = {**loaded.describe(), "member": ARCFACE_MEMBER}
        return ArcFaceEncoder(loaded.module, origin=origin)
    loaded = load_model(store, DLIB_DESCRIPTOR, "identity", option="identity encoder")
    return DlibFaceEncoder(loaded.module, origin=loaded.describe())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, broadcasting the rest.

    (D,) with (D,) gives a scalar array; (K, D) with (K, D) one value per row; (K, 1, D)
    with (M, D) the (K, M) matrix. Inputs need not be normalised.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=-1)


# dlib calls two raw descriptors one person below euclidean distance 0.6. Its descriptors
# are not unit vectors: their norms measured 1.30-1.67 (median 1.41) on the 23 faces of the
# shared test media. For two descriptors of norm n, |a - b|^2 = 2 n^2 (1 - cos), so the 0.6
# rule reads cos >= 1 - 0.36 / (2 n^2) = 0.91 at n = 1.41. On the test pairs the two rules
# agree (see tests/unit/test_identity.py and the README figures).
DLIB_DISTANCE_THRESHOLD = 0.6
DLIB_TYPICAL_NORM = 1.41
DLIB_COSINE_THRESHOLD = round(1 - DLIB_DISTANCE_THRESHOLD**2 / (2 * DLIB_TYPICAL_NORM**2), 2)

# dlib's shape predictor wants a face box like its HOG detector's. Measured against that
# detector on 46 faces of the test media: the box centre lies 0.43 of the way from the eyes'
# midpoint to the mouth's, its side is 2.27 times that eye-mouth distance.
_BOX_CENTRE_ALONG = 0.43
_BOX_SIDE = 2.27


class DlibFaceEncoder:
    """dlib's ResNet face descriptor (128-D, LFW 99.38 %) on its own 150 px chips.

    For each face, a box is set from our landmarks, dlib's 5-point shape predictor finds its
    own points in it (eye corners and the base of the nose, not our eye centres and nose
    tip), and `dlib.get_face_chip` aligns the chip the descriptor was trained on.
    """

    name = "dlib_resnet_v1"
    threshold = DLIB_COSINE_THRESHOLD
    dim = 128
    chip_size = 150
    chip_padding = 0.25

    def __init__(self, models: DlibFaceModels, *, origin: dict[str, Any] | None = None):
        """models: dlib's predictor and descriptor as the model factory loads them
        (`load_model(store, "dlib-resnet-face", "identity").module`)."""
        if not isinstance(models, DlibFaceModels):
            raise TypeError(f"DlibFaceEncoder takes the loaded DlibFaceModels, not "
                            f"{type(models).__name__}; see open_identity_encoder")
        self._predictor, self._descriptor = models.predictor, models.descriptor
        self._dlib = models.dlib
        self.origin = origin or {}

    def describe(self) -> dict[str, object]:
        """Where the model came from, for the run summary."""
        return {"name": self.name,
                "source": self.origin.get("source", "bundled:face-recognition-models"),
                "threshold": self.threshold}

    def embed(self, faces: Sequence[LandmarkedFace], /) -> np.ndarray:
        """(K, 128) float32 unit-norm descriptors of `faces`."""
        raw = self.descriptors(faces)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)

    def descriptors(self, faces: Sequence[LandmarkedFace]) -> np.ndarray:
        """(K, 128) float32 descriptors as dlib gives them (not unit norm), for its 0.6 rule."""
        chips = self.chips(faces)
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        return np.array(self._descriptor.compute_face_descriptor(chips), dtype=np.float32)

    def chips(self, faces: Sequence[LandmarkedFace]) -> list[np.ndarray]:
        """The aligned (150, 150, 3) uint8 RGB chips the descriptor sees, one per face."""
        out = []
        for image, landmarks in faces:
            image = rgb_uint8(image)
            shape = self._predictor(image, self._box(np.asarray(landmarks, np.float64)))
            out.append(self._dlib.get_face_chip(image, shape, size=self.chip_size,
                                                padding=self.chip_padding))
        return out

    def _box(self, landmarks: np.ndarray):
        if landmarks.shape != (5, 2):
            raise ValueError(f"landmarks must be (5, 2), got {landmarks.shape}")
        eyes, mouth = landmarks[:2].mean(axis=0), landmarks[3:].mean(axis=0)
        centre = eyes + _BOX_CENTRE_ALONG * (mouth - eyes)
        half = _BOX_SIDE * np.linalg.norm(mouth - eyes) / 2
        left, top = np.round(centre - half).astype(int)
        right, bottom = np.round(centre + half).astype(int)
        return self._dlib.rectangle(int(left), int(top), int(right), int(bottom))
