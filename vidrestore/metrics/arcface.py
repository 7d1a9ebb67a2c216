"""ArcFace identity embeddings: insightface's buffalo_l recogniser (w600k_r50.onnx) run by
onnxruntime, preprocessed the way insightface's `ArcFaceONNX` does it.

Per face: a least-squares similarity from its 5 landmarks to the ArcFace template
(insightface `face_align.estimate_norm`: the 112 px points below), `cv2.warpAffine` to
112 x 112 (bilinear, black outside, as `norm_crop`), RGB, (x - 127.5) / 127.5 (the
`input_mean` / `input_std` insightface uses for models without their own Sub/Mul, which
w600k_r50 is). All faces of a call go through the network in one session run; the 512-D
outputs are L2-normalised.

The `insightface` package itself is not used: it would bring scikit-image, onnx and requests
for five template points and one transform estimate, which `similarity_transforms` already
computes batched (the same Umeyama solution as skimage's `SimilarityTransform.estimate`).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import ChecksumError, ModelError
from ..face_geometry import similarity_transforms
from ..models.registry import FileDigest
from ..models.store import ResolvedModel
from .faces import LandmarkedFace, rgb_uint8

log = logging.getLogger(__name__)

ARCFACE_MODEL = "arcface-buffalo_l"  # registry name; also the encoder's name in the log
ARCFACE_MEMBER = "w600k_r50.onnx"  # the recogniser inside buffalo_l.zip

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

    `onnx_model` is the ONNX file or its bytes. Input and output names and the input size are
    read from the session; the batch axis must be dynamic (it is in w600k_r50.onnx).
    """

    name = ARCFACE_MODEL
    threshold = ARCFACE_COSINE_THRESHOLD

    def __init__(self, onnx_model: bytes | str | Path, providers: Sequence[str] | None = None,
                 *, origin: dict[str, Any] | None = None):
        import onnxruntime as ort  # ~0.3 s to import; only when ArcFace is used

        available = ort.get_available_providers()
        chosen = list(providers) if providers else [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        options = ort.SessionOptions()
        # idle workers sleep instead of spinning on the cores the encoder thread needs (as
        # torch's are told to in vidrestore.memory)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(source, options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            what = "the ONNX bytes" if isinstance(onnx_model, bytes) else onnx_model
            raise ModelError(f"cannot load ArcFace from {what}: "
                             f"{str(exc).strip().splitlines()[0][:160]}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"ArcFace graph has {len(inputs)} inputs and {len(outputs)} "
                             "outputs; expected one of each (w600k_r50.onnx)")
        self._input, self._output = inputs[0].name, outputs[0].name
        shape = inputs[0].shape  # e.g. ['None', 3, 112, 112]
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or not isinstance(
                shape[2], int):
            raise ModelError(f"ArcFace input {self._input!r} has shape {shape}; expected "
                             "(batch, 3, S, S)")
        self.size = int(shape[2])
        self.dim = outputs[0].shape[-1]
        if not isinstance(self.dim, int):
            raise ModelError(f"ArcFace output {self._output!r} has shape {outputs[0].shape}; "
                             "expected (batch, D)")
        self.origin = origin or {"name": self.name, "source": "file", "path": str(onnx_model)
                                 if not isinstance(onnx_model, bytes) else None}
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


def load_arcface(resolved: ResolvedModel) -> ArcFaceEncoder:
    """The encoder from a resolved buffalo_l.zip (or a bare .onnx), its member checked
    against the registry's digest before onnxruntime reads it."""
    path, origin = resolved.path, resolved.describe()
    if path.suffix.lower() == ".onnx":
        return ArcFaceEncoder(path, origin=origin)
    member = next((m for m in resolved.spec.members if m.filename == ARCFACE_MEMBER), None)
    return ArcFaceEncoder(_member_bytes(path, ARCFACE_MEMBER, member, resolved.spec.name),
                          origin={**origin, "member": ARCFACE_MEMBER})


def _member_bytes(path: Path, name: str, expected: FileDigest | None, model: str) -> bytes:
    """The bytes of the zip member whose base name is `name`, size and SHA-256 checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            found = [i for i in archive.infolist() if Path(i.filename).name == name]
            if len(found) != 1:
                raise ModelError(f"{model}: {path} holds {len(found)} files named {name}; "
                                 "expected one (insightface's buffalo_l.zip)")
            data = archive.read(found[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{model}: cannot read {path} ({exc}); delete it and run "
                         f"`vidrestore models download {model}`") from exc
    if expected is not None:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != expected.size_bytes or digest != expected.sha256:
            raise ChecksumError(f"{model}: {name} in {path} does not match ({len(data)} bytes, "
                                f"sha256 {digest}; expected {expected.size_bytes} bytes, "
                                f"{expected.sha256}); delete the zip and run `vidrestore "
                                f"models download {model}`")
    return data


def _landmarks(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2), got {points.shape}")
    return points
