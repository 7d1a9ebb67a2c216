"""The identity guard: a restored face whose identity cosine against its input falls under
the encoder's threshold is blended back toward the input, one fidelity step at a time
(0.75, 0.5, 0.25, 0), until it passes; the scores it ends with go into `FaceSet.identity`."""

from __future__ import annotations

import numpy as np
import torch

from ..batch import FrameBatch, IdentityScores
from ..metrics.face_figures import identity_scores, landmarked
from ..metrics.identity import IdentityEncoder, cosine

GUARD_FIDELITIES = (0.75, 0.5, 0.25, 0.0)  # steps back toward the input


class IdentityGuard:
    """faces.restored (K, 3, S, S) float RGB in [0, 1] -> the same, failing faces blended
    toward faces.crops; faces.identity set. The encoder runs on the host."""

    name = "identity"  # the scoring is its, as it is the observer's when the guard is off

    def __init__(self, encoder: IdentityEncoder) -> None:
        self.encoder = encoder

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        if not faces.restored_count:
            return batch
        reference, scores = identity_scores(self.encoder, faces.crops, faces.restored)
        restored = faces.restored
        if scores.flagged.any():
            restored = self._guard(faces.crops, restored, reference, scores)
        return batch.with_faces(restored=restored, identity=scores)

    def _guard(self, crops: torch.Tensor, restored: torch.Tensor, reference: np.ndarray,
               result: IdentityScores) -> torch.Tensor:
        """Faces under the threshold, blended toward their input one fidelity step at a
        time until they pass (fidelity 0 is the input itself); updates `result`."""
        faces = restored.clone()
        for fidelity in GUARD_FIDELITIES:
            failing = np.flatnonzero(result.cosine < result.threshold)
            if not len(failing):
                break
            index = torch.as_tensor(failing, device=faces.device)
            faces[index] = torch.lerp(crops[index], restored[index], fidelity)
            result.cosine[failing] = cosine(reference[failing],
                                            self.encoder.embed(landmarked(faces[index])))
            result.fidelity[failing] = fidelity
        return faces
