"""`FrameBatch`: the device-side unit of work that moves through the stages, and the
`FaceSet` it carries through the face path (checked on construction, like the batch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class IdentityScores:
    """Per restored face (K,): cosine of what is pasted against the input face, whether the
    restorer's own output fell under the encoder's threshold, the guard's fidelity step
    (1: as restored)."""

    encoder: str
    threshold: float
    cosine: np.ndarray
    flagged: np.ndarray
    fidelity: np.ndarray


@dataclass(frozen=True)
class FaceSet:
    """The faces of a batch, built up stage by stage along the face path.

    Every face found or predicted (F of them), in frame order, and within a frame in the
    tracker's order; host-side, frame pixels:
        frame_index: (F,) int64, the face's frame in the batch.
        track_ids, scores, skipped (why not restored, or None), predicted: F each.
        boxes: (F, 4) float32 x1, y1, x2, y2, smoothed.
        landmarks_raw, landmarks: (F, 5, 2) float32, as detected and smoothed.
    ended_tracks: ids of the tracks that ended in this batch.

    The K faces restored (those not skipped), after alignment, on the working device:
        restore_index: (K,) int64 on the host, each one's index among the F faces.
        crop_frames: (K,) int64, each one's frame in the batch.
        affines: (K, 2, 3) float32, input pixels -> crop pixels.
        crops: (K, 3, S, S) float32 RGB in [0, 1], the aligned input faces.
        restored: same shape as crops, what is to be pasted (restored, then colour-matched
            and guarded), or None before the restorer ran.
        paste_masks: (K, 1, S, S) soft face masks in [0, 1] from parsing, or None.
        identity: per-face identity scores, or None when not scored.
        background: (N, 3, sH, sW) the output before the faces were pasted (after the paste
            stage only), for the figures that compare the two.
    """

    frame_index: torch.Tensor
    track_ids: tuple[int, ...]
    boxes: torch.Tensor
    landmarks_raw: torch.Tensor
    landmarks: torch.Tensor
    scores: tuple[float, ...]
    skipped: tuple[str | None, ...]
    predicted: tuple[bool, ...]
    ended_tracks: frozenset[int] = frozenset()
    restore_index: torch.Tensor | None = None
    crop_frames: torch.Tensor | None = None
    affines: torch.Tensor | None = None
    crops: torch.Tensor | None = None
    restored: torch.Tensor | None = None
    paste_masks: torch.Tensor | None = None
    identity: IdentityScores | None = None
    background: torch.Tensor | None = None

    def __post_init__(self) -> None:
        f = len(self.track_ids)
        _check_host("frame_index", self.frame_index, (f,), torch.int64)
        _check_host("boxes", self.boxes, (f, 4), torch.float32)
        _check_host("landmarks_raw", self.landmarks_raw, (f, 5, 2), torch.float32)
        _check_host("landmarks", self.landmarks, (f, 5, 2), torch.float32)
        for name in ("scores", "skipped", "predicted"):
            if len(getattr(self, name)) != f:
                raise ValueError(f"FaceSet: {len(getattr(self, name))} {name} for {f} faces")
        aligned = (self.restore_index, self.crop_frames, self.affines, self.crops)
        if all(x is None for x in aligned):
            if self.restored is not None or self.paste_masks is not None:
                raise ValueError("FaceSet: restored faces or masks without aligned crops")
            return
        if any(x is None for x in aligned):
            raise ValueError("FaceSet: restore_index, crop_frames, affines and crops go "
                             "together")
        self._check_aligned()

    def _check_aligned(self) -> None:
        k = self.restore_index.shape[0]
        _check_host("restore_index", self.restore_index, (k,), torch.int64)
        if self.crops.ndim != 4 or self.crops.shape[:2] != (k, 3) or \
                self.crops.shape[2] != self.crops.shape[3] or not self.crops.is_floating_point():
            raise ValueError(f"FaceSet: crops must be float ({k}, 3, S, S), got "
                             f"{self.crops.dtype} {tuple(self.crops.shape)}")
        size, device = self.crops.shape[-1], self.crops.device
        expected = {"crop_frames": (self.crop_frames, (k,)),
                    "affines": (self.affines, (k, 2, 3)),
                    "restored": (self.restored, (k, 3, size, size)),
                    "paste_masks": (self.paste_masks, (k, 1, size, size))}
        for name, (tensor, shape) in expected.items():
            if tensor is None:
                continue
            if tuple(tensor.shape) != shape or tensor.device != device:
                raise ValueError(f"FaceSet: {name} must be {shape} on {device}, got "
                                 f"{tuple(tensor.shape)} on {tensor.device}")
            if (name == "crop_frames") == tensor.is_floating_point():
                raise ValueError(f"FaceSet: {name} must be "
                                 f"{'int64' if name == 'crop_frames' else 'float'}, got "
                                 f"{tensor.dtype}")
        if self.identity is not None and len(self.identity.cosine) != k:
            raise ValueError(f"FaceSet: {len(self.identity.cosine)} identity scores for {k} "
                             "restored faces")

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def restored_count(self) -> int:
        """K: how many faces are restored (0 before alignment)."""
        return 0 if self.restore_index is None else self.restore_index.shape[0]

    def in_frame(self, n: int) -> list[int]:
        """Indices (among the F faces) of frame n's faces, in order."""
        return torch.nonzero(self.frame_index == n).flatten().tolist()


def _check_host(name: str, tensor: torch.Tensor, shape: tuple[int, ...],
                dtype: torch.dtype) -> None:
    if tuple(tensor.shape) != shape or tensor.dtype != dtype or tensor.device.type != "cpu":
        raise ValueError(f"FaceSet: {name} must be {dtype} {shape} on the host, got "
                         f"{tensor.dtype} {tuple(tensor.shape)} on {tensor.device}")


@dataclass(frozen=True)
class FrameBatch:
    """N frames on the working device.

    inputs: (N, 3, H, W) float32 RGB in [0, 1], the decoded frames; only the pre-processing
        stage replaces them (with a new tensor), and no stage changes them in place.
    output: (N, 3, sH, sW) float32 RGB in [0, 1], the frames being built (None until the
        background stage has run). Later stages and the download may write it in place, so
        it must own its memory: it may not share storage with `inputs`, and neither may be
        an inference tensor (made under `torch.inference_mode`, which refuses in-place
        writes outside it). Both are checked here, the one place every stage hands over.
    scale: output size / input size.
    notes: one dict per frame; stages add log fields (faces, ...) by returning new dicts.
    times_s: each frame's presentation time in seconds (the tracker's clock, so variable
        frame rates need no special case); defaults to 0, 1, 2, ...
    faces: the face path's `FaceSet` (None until its first stage has run).
    """

    inputs: torch.Tensor
    scale: int
    output: torch.Tensor | None = None
    notes: tuple[dict[str, Any], ...] = field(default=())
    times_s: tuple[float, ...] = field(default=())
    faces: FaceSet | None = None

    def __post_init__(self) -> None:
        if self.inputs.ndim != 4 or self.inputs.shape[1] != 3:
            raise ValueError(f"inputs must be (N, 3, H, W), got {tuple(self.inputs.shape)}")
        if not self.inputs.is_floating_point():
            raise ValueError(f"inputs must be float in [0, 1], got {self.inputs.dtype}")
        _check_writable("inputs", self.inputs)
        if self.output is not None:
            _check_writable("output", self.output)
            if _shares_memory(self.output, self.inputs):
                raise ValueError("output shares memory with inputs: a stage must hand on a "
                                 "new tensor (e.g. a resize to the same size must copy)")
        n, _, h, w = self.inputs.shape
        if self.output is not None and tuple(self.output.shape) != (n, 3, h * self.scale,
                                                                     w * self.scale):
            raise ValueError(f"output must be {(n, 3, h * self.scale, w * self.scale)}, "
                             f"got {tuple(self.output.shape)}")
        if not self.notes:
            object.__setattr__(self, "notes", tuple({} for _ in range(n)))
        elif len(self.notes) != n:
            raise ValueError(f"{len(self.notes)} notes for {n} frames")
        if not self.times_s:
            object.__setattr__(self, "times_s", tuple(float(i) for i in range(n)))
        elif len(self.times_s) != n:
            raise ValueError(f"{len(self.times_s)} times for {n} frames")
        if self.faces is not None and len(self.faces) and int(self.faces.frame_index.max()) >= n:
            raise ValueError(f"a face of frame {int(self.faces.frame_index.max())} in a batch "
                             f"of {n} frames")

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def with_faces(self, **changes: Any) -> FrameBatch:
        """This batch with fields of its `FaceSet` replaced (and checked again)."""
        return dataclasses.replace(self, faces=dataclasses.replace(self.faces, **changes))


def _check_writable(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_inference():
        raise ValueError(f"{name} is an inference tensor (made under torch.inference_mode); "
                         "run networks under torch.no_grad so later stages can write to it")


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == \
        b.untyped_storage().data_ptr()
