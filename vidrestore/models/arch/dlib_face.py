"""dlib's face models as dlib runs them: the 5-point shape predictor that finds the points a
face chip is aligned by, and the ResNet descriptor that embeds the chip (both `.dat` files of
face-recognition-models, run by the dlib-bin wheel). The model factory opens them;
`metrics/identity.py`'s `DlibFaceEncoder` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ModelError


@dataclass(frozen=True)
class DlibFaceModels:
    """The two loaded dlib networks and the dlib module that runs them."""

    predictor: Any  # dlib.shape_predictor
    descriptor: Any  # dlib.face_recognition_model_v1
    dlib: Any


def load_dlib_face_models(predictor: str | Path, descriptor: str | Path) -> DlibFaceModels:
    """Both models from their `.dat` files; a one-line `ModelError` when one cannot be read."""
    dlib = import_dlib()
    try:
        return DlibFaceModels(dlib.shape_predictor(str(predictor)),
                              dlib.face_recognition_model_v1(str(descriptor)), dlib)
    except RuntimeError as exc:
        raise ModelError(f"cannot load dlib face models {predictor}, {descriptor}: "
                         f"{str(exc).strip().splitlines()[0]}") from exc


def import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise ModelError("dlib is not installed; pip install dlib-bin") from exc
    return dlib
