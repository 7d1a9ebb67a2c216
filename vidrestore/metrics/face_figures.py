"""The face path's figures and log records, taken by observers of the batch after the paste:
they read the `FaceSet` and the frames and add to the frames' notes (and the identity scores
to the `FaceSet`), and change no pixel.

Each frame's note gets a "faces" list and the whole frame's "sharpness" (input and output).
A face record holds:

    track, box [x1, y1, x2, y2], landmarks_raw, landmarks (smoothed; 5 points), score:
        input-frame pixels, from the detector and tracker;
    skipped: why the face was not restored (too small, profile, unconfirmed), or null;
    predicted: the detector missed the face in this frame and it was restored where its track
        predicts it (face.track.restore_missed); its score is the last detection's;
    identity {encoder, cosine, threshold}: what is pasted against the input face (null when
        scoring is off); flagged: the restorer's own output fell under the threshold;
        guard_fidelity: where the identity guard left the face (1: as restored);
    psnr, ssim: the face box of the output against the upscaled background before the paste;
    sharpness {input, upscaled, output}: variance of the Laplacian of the face box;
    lpips: LPIPS (AlexNet, v0.1) of the same two face boxes, each resampled to 256 x 256
        (one metric call for all faces of the batch); null, with lpips_reason, when the
        metric is absent (its AlexNet trunk is not in the model cache) or the face skipped.
Figures that were not measured (skipped faces) are null.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torchvision.ops import roi_align

from ..batch import FaceSet, FrameBatch, IdentityScores
from ..face_geometry import face_template
from .faces import LandmarkedFace
from .identity import IdentityEncoder, cosine
from .perceptual import Lpips
from .quality import laplacian_variance, psnr, ssim

LPIPS_SIZE = 256  # face boxes are resampled to this square for one batched LPIPS call
LPIPS_REASON = "not measured: no LPIPS metric given to the face stage"
SKIPPED_REASON = "not measured: face not restored"


class FaceIdentity:
    """Observer: the identity cosine of each restored face (what is pasted) against its
    input crop, into faces.identity; left alone when the identity guard already scored."""

    name = "identity"

    def __init__(self, encoder: IdentityEncoder) -> None:
        self.encoder = encoder

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        if not faces.restored_count or faces.identity is not None:
            return batch
        _, scores = identity_scores(self.encoder, faces.crops, faces.restored)
        return batch.with_faces(identity=scores)


def identity_scores(encoder: IdentityEncoder, crops: torch.Tensor, faces: torch.Tensor
                    ) -> tuple[np.ndarray, IdentityScores]:
    """The input crops' embeddings, and `faces` scored against them (guard fidelity 1)."""
    reference = encoder.embed(landmarked(crops))
    scores = cosine(reference, encoder.embed(landmarked(faces)))
    return reference, IdentityScores(encoder.name, encoder.threshold, scores,
                                     scores < encoder.threshold, np.ones(len(scores)))


def landmarked(crops: torch.Tensor) -> list[LandmarkedFace]:
    """(K, 3, S, S) aligned crops -> (uint8 image, template landmarks) pairs on the host."""
    images = (crops * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
    template = face_template(crops.shape[-1]).numpy()
    return [LandmarkedFace(image, template) for image in images.numpy()]


class FaceRecords:
    """Observer: each frame's face records and sharpness into its note (see the module
    docstring); needs the paste to have run (faces.background)."""

    name = "measure"

    def __init__(self, lpips_reason: str = LPIPS_REASON) -> None:
        self.lpips_reason = lpips_reason

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces, output = batch.faces, batch.output
        restored = {} if not faces.restored_count else \
            {f: k for k, f in enumerate(faces.restore_index.tolist())}
        frame_in = laplacian_variance(batch.inputs).tolist()
        frame_out = laplacian_variance(output).tolist()
        notes = []
        for n, note in enumerate(batch.notes):
            records = []
            for f in faces.in_frame(n):
                k = restored.get(f)
                figures = {"lpips_reason": SKIPPED_REASON} if k is None else {
                    "lpips_reason": self.lpips_reason,
                    **_region_figures(batch, n, faces.boxes[f]),
                    **_identity_figures(faces.identity, k)}
                records.append(_face_record(faces, f, figures))
            sharp = {"input": _round(frame_in[n], 1), "output": _round(frame_out[n], 1)}
            notes.append({**note, "faces": records, "sharpness": sharp})
        return dataclasses.replace(batch, notes=tuple(notes))


class FaceLpips:
    """Observer: LPIPS of each restored face box, output against the upscaled background
    before the paste, into its record (after `FaceRecords`); one metric call a batch."""

    name = "lpips"

    def __init__(self, metric: Lpips) -> None:
        self.metric = metric

    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        faces = batch.faces
        if not faces.restored_count:
            return batch
        index = faces.restore_index
        rois, valid = _output_rois(faces.boxes[index], faces.crop_frames, batch.scale,
                                   batch.output.shape[-2:])
        size = (LPIPS_SIZE, LPIPS_SIZE)
        after = roi_align(batch.output.float(), rois, size, sampling_ratio=-1, aligned=True)
        before = roi_align(faces.background.float(), rois, size, sampling_ratio=-1,
                           aligned=True)
        values = self.metric(after, before).tolist()
        records = [list(note["faces"]) for note in batch.notes]
        for f, value, ok in zip(index.tolist(), values, valid.tolist(), strict=True):
            n = int(faces.frame_index[f])
            j = faces.in_frame(n).index(f)
            lpips = _round(value, 4) if ok else None
            records[n][j] = {**records[n][j], "lpips": lpips, "lpips_reason": (
                None if lpips is not None else "not measured: face box outside the frame")}
        notes = tuple({**note, "faces": faces_n}
                      for note, faces_n in zip(batch.notes, records, strict=True))
        return dataclasses.replace(batch, notes=notes)


def _output_rois(boxes: torch.Tensor, frame_index: torch.Tensor, scale: int,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 5) roi_align boxes [frame, x1, y1, x2, y2] of input-pixel face boxes in the
    output frame (scaled, clipped to it), and (K,) whether each keeps a pixel or more.
    Continuous coordinates, pixel centres at +0.5: the detector's convention too."""
    height, width = size
    scaled = boxes.to(frame_index.device, torch.float32) * scale
    limits = scaled.new_tensor([width, height, width, height])
    clipped = torch.minimum(scaled.clamp_min(0), limits)
    valid = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
    return torch.cat([frame_index[:, None].float(), clipped], 1), valid.cpu()


def _pixel_box(box: torch.Tensor, scale: int, height: int, width: int) -> tuple[int, ...]:
    """(top, left, bottom, right) integer bounds of an input-pixel box at `scale`, clipped
    to a height x width image (bottom/right exclusive; empty when outside)."""
    x1, y1, x2, y2 = (box.double() * scale).tolist()
    left, top = min(max(int(np.floor(x1)), 0), width), min(max(int(np.floor(y1)), 0), height)
    right, bottom = max(min(int(np.ceil(x2)), width), left), max(min(int(np.ceil(y2)), height),
                                                                   top)
    return top, left, bottom, right


def _region_figures(batch: FrameBatch, n: int, box: torch.Tensor) -> dict[str, Any]:
    """PSNR/SSIM of the pasted face box against the background before the paste, and the
    face's sharpness in the input, the upscaled background and the output. Sharpness
    depends on resolution: compare "output" with "upscaled" (both at the output scale), not
    with "input" when the scale is above 1. Only the box is touched."""
    output, background = batch.output, batch.faces.background
    top, left, bottom, right = _pixel_box(box, 1, *batch.inputs.shape[-2:])
    face_in = batch.inputs[n:n + 1, :, top:bottom, left:right]
    top, left, bottom, right = _pixel_box(box, batch.scale, *output.shape[-2:])
    before = background[n:n + 1, :, top:bottom, left:right]
    after = output[n:n + 1, :, top:bottom, left:right]
    if after.numel() == 0 or face_in.numel() == 0:
        return {}
    return {"psnr": _round(psnr(after, before).item(), 2),
            "ssim": _round(ssim(after, before).item(), 4),
            "sharpness": {"input": _round(laplacian_variance(face_in).item(), 1),
                          "upscaled": _round(laplacian_variance(before).item(), 1),
                          "output": _round(laplacian_variance(after).item(), 1)}}


def _identity_figures(identity: IdentityScores | None, k: int) -> dict[str, Any]:
    if identity is None:
        return {}
    return {"identity": {"encoder": identity.encoder, "cosine": _round(identity.cosine[k], 4),
                         "threshold": identity.threshold},
            "flagged": bool(identity.flagged[k]),
            "guard_fidelity": float(identity.fidelity[k])}


def _face_record(faces: FaceSet, f: int, figures: dict[str, Any]) -> dict[str, Any]:
    """Face f's log record; figures not measured (skipped faces, scoring off) are null."""
    return {"track": faces.track_ids[f], "box": _points(faces.boxes[f]),
            "landmarks_raw": _points(faces.landmarks_raw[f]),
            "landmarks": _points(faces.landmarks[f]),
            "score": round(faces.scores[f], 4), "skipped": faces.skipped[f],
            "predicted": faces.predicted[f],
            "identity": None, "flagged": None, "guard_fidelity": None,
            "psnr": None, "ssim": None, "lpips": None, "lpips_reason": None,
            "sharpness": None, **figures}


def _points(values: torch.Tensor) -> list:
    return np.round(values.double().numpy(), 2).tolist()


def _round(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None
