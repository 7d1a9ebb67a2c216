"""The face path of a batch: detect, track, align, restore, parse, colour-match, paste, measure.

All faces of a batch travel together: one detector pass over the frames, one warp for all
crops, one restorer call (chunked only by the restorer's memory bound), one parse, one colour
update, one paste call. Only the tracker goes frame by frame, in frame order, on the host (a
handful of boxes a frame). The tracker, the colour history and the last frame seen (for scene
cuts) are the stage's one piece of state, `FaceStreamState`; the pipeline runs batches in
order on one thread.

Faces are pasted onto `batch.output`, the upscaled background, so the background stage runs
first. Each frame's note gets a "faces" list, the whole frame's "sharpness" (input and
output) and per-step "timings_ms" ("faces.detect", ...). A face record holds:

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
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..batch import FrameBatch
from ..config import FaceConfig
from ..metrics.identity import IdentityEncoder, LandmarkedFace, cosine
from ..metrics.perceptual import Lpips
from ..metrics.quality import laplacian_variance, psnr, ssim
from ..models.arch.parsenet import ParseNet, face_mask_from_parsing
from .align import face_template, paste_faces, similarity_transforms, warp_faces
from .colour import ColourConsistency
from .detect import Detections, FaceDetector
from .track import FaceTracker, TrackedFace, detect_scene_cuts

log = logging.getLogger(__name__)

FACE_SIZE = 512  # GFPGAN's and RestoreFormer's aligned crop, FFHQ template
GUARD_FIDELITIES = (0.75, 0.5, 0.25, 0.0)  # identity guard: steps back toward the input
LPIPS_SIZE = 256  # face boxes are resampled to this square for one batched LPIPS call
LPIPS_REASON = "not measured: no LPIPS metric given to the face stage"
SKIPPED_REASON = "not measured: face not restored"
# facexlib's paste mask from parsing: Gaussian blur (101 px, sigma 11) twice, 10 px border 0
PARSE_BLUR_TAPS, PARSE_BLUR_SIGMA, PARSE_BLUR_PASSES, PARSE_BORDER_PX = 101, 11.0, 2, 10

Restorer = Callable[[torch.Tensor], torch.Tensor]  # (K, 3, S, S) [0, 1] -> same


@dataclass
class FaceModels:
    """The networks of the face path, loaded and on the stage's device (identity: host)."""

    detector: FaceDetector
    restorer: Restorer
    parser: ParseNet | None = None
    identity: IdentityEncoder | None = None
    lpips: Lpips | None = None
    lpips_reason: str = LPIPS_REASON  # why there is no `lpips` metric, for the log


@dataclass
class FaceStreamState:
    """What the face path remembers between batches of one stream."""

    tracker: FaceTracker
    colour: ColourConsistency
    previous_frame: torch.Tensor | None = None  # (3, H, W): the last batch's last input


@dataclass(frozen=True)
class AlignedFaces:
    """The K faces of a batch that are restored, in frame order.

    places: (frame in batch, rank among that frame's detections) of each face.
    track_ids: K track ids.
    frame_index: (K,) int64 on the device. affines: (K, 2, 3) input pixels -> crop pixels.
    crops: (K, 3, S, S) float32 RGB in [0, 1], the aligned input faces.
    """

    places: list[tuple[int, int]]
    track_ids: list[int]
    frame_index: torch.Tensor
    affines: torch.Tensor
    crops: torch.Tensor

    def __len__(self) -> int:
        return len(self.places)


@dataclass
class IdentityScores:
    """Per restored face (K,): cosine of what is pasted against the input face, whether the
    restorer's own output fell under the encoder's threshold, the guard's fidelity step."""

    encoder: str
    threshold: float
    cosine: np.ndarray
    flagged: np.ndarray
    fidelity: np.ndarray


class FaceStage:
    """Restores every face of a batch and pastes it onto the upscaled background."""

    name = "faces"

    def __init__(self, config: FaceConfig, models: FaceModels, device: torch.device) -> None:
        self.config, self.models, self.device = config, models, device
        colour = ColourConsistency(config.colour_strength, config.colour_history)
        self.state = FaceStreamState(FaceTracker(config.track), colour)
        self._colour_mask = template_face_mask(FACE_SIZE, device)

    @torch.no_grad()
    def __call__(self, batch: FrameBatch, /) -> FrameBatch:
        """batch.inputs (N, 3, H, W) and batch.output (N, 3, sH, sW), float RGB in [0, 1] on
        the device. Returns the batch with the faces pasted into a new output, and each
        frame's note extended with "faces", "sharpness" and "timings_ms" (see the module
        docstring)."""
        if batch.output is None:
            raise ValueError("the face stage pastes onto the background: run that stage first")
        clock = _Clock(self.device, len(batch))
        detections = self.models.detector(batch.inputs)
        clock("detect")
        tracked, ended = self._track(batch, detections)
        clock("track")
        aligned = self._align(batch.inputs, tracked)
        clock("align")
        output, identity = self._restore_and_paste(batch, aligned, clock)
        self.state.colour.end(ended)
        figures = self._measure(batch, output, tracked, aligned, identity)
        clock("measure")
        self._add_lpips(batch, output, tracked, aligned, figures)
        clock("lpips")
        notes = tuple({**note, "faces": faces, "sharpness": sharp, "timings_ms": clock.ms}
                      for note, (faces, sharp) in zip(batch.notes, figures, strict=True))
        return dataclasses.replace(batch, output=output, notes=notes)

    # --- steps ------------------------------------------------------------------------------

    def _track(self, batch: FrameBatch, detections: list[Detections]
               ) -> tuple[list[list[TrackedFace]], set[int]]:
        """Per frame, in order: the tracked faces; and the ids of tracks that ended."""
        state = self.state
        cuts = detect_scene_cuts(batch.inputs, state.previous_frame,
                                 self.config.track.scene_cut_threshold)
        state.previous_frame = batch.inputs[-1].clone()  # the input buffer is reused
        tracked, ended = [], set()
        for found, time_s, cut in zip(detections, batch.times_s, cuts, strict=True):
            before = state.tracker.track_ids
            tracked.append(state.tracker.update(found, time_s, cut))
            ended |= before - state.tracker.track_ids
        return tracked, ended

    def _align(self, frames: torch.Tensor, tracked: list[list[TrackedFace]]) -> AlignedFaces:
        """Aligned crops of the faces not skipped, from their smoothed landmarks."""
        places = [(n, j) for n, faces in enumerate(tracked)
                  for j, face in enumerate(faces) if face.skipped is None]
        chosen = [tracked[n][j] for n, j in places]
        landmarks = torch.stack([f.landmarks for f in chosen]) if chosen else torch.zeros(0, 5, 2)
        affines = similarity_transforms(landmarks.to(self.device))
        frame_index = torch.tensor([n for n, _ in places], dtype=torch.int64,
                                   device=self.device)
        crops = warp_faces(frames, frame_index, affines, FACE_SIZE)
        return AlignedFaces(places, [f.track_id for f in chosen], frame_index, affines, crops)

    def _restore_and_paste(self, batch: FrameBatch, aligned: AlignedFaces, clock: _Clock
                           ) -> tuple[torch.Tensor, IdentityScores | None]:
        """(N, 3, sH, sW) output with the restored faces pasted, and their identity scores."""
        if not len(aligned):
            return batch.output, None
        restored = self.models.restorer(aligned.crops)
        clock("restore")
        masks = self._parse(restored)
        clock("parse")
        colour_masks = masks if masks is not None else self._colour_mask.expand(
            len(aligned), -1, -1, -1)
        faces = self.state.colour(aligned.track_ids, restored, aligned.crops, colour_masks)
        clock("colour")
        faces, identity = self._identity(aligned.crops, faces)
        clock("identity")
        output = paste_faces(batch.output, faces, aligned.frame_index, aligned.affines,
                             batch.scale, masks)
        clock("paste")
        return output, identity

    def _parse(self, faces: torch.Tensor) -> torch.Tensor | None:
        """(K, 1, S, S) soft paste masks from ParseNet, or None without its weights."""
        parser = self.models.parser
        if parser is None:
            return None
        dtype = next(parser.parameters()).dtype
        logits = parser.parse((faces * 2 - 1).to(dtype))
        return soften_parse_mask(face_mask_from_parsing(logits))

    def _identity(self, crops: torch.Tensor, faces: torch.Tensor
                  ) -> tuple[torch.Tensor, IdentityScores | None]:
        """Score each face against its input; with the guard, blend failures back."""
        encoder = self.models.identity
        if encoder is None:
            return faces, None
        reference = encoder.embed(_landmarked(crops))
        scores = cosine(reference, encoder.embed(_landmarked(faces)))
        result = IdentityScores(encoder.name, encoder.threshold, scores,
                                scores < encoder.threshold, np.ones(len(scores)))
        if self.config.identity_guard and result.flagged.any():
            faces = self._guard(crops, faces, reference, result, encoder)
        return faces, result

    def _guard(self, crops: torch.Tensor, restored: torch.Tensor, reference: np.ndarray,
               result: IdentityScores, encoder: IdentityEncoder) -> torch.Tensor:
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
                                            encoder.embed(_landmarked(faces[index])))
            result.fidelity[failing] = fidelity
        return faces

    # --- the log ------------------------------------------------------------------------------

    def _measure(self, batch: FrameBatch, output: torch.Tensor,
                 tracked: list[list[TrackedFace]], aligned: AlignedFaces,
                 identity: IdentityScores | None) -> list[tuple[list[dict], dict]]:
        """Per frame: the face records and the whole frame's sharpness."""
        restored = {place: k for k, place in enumerate(aligned.places)}
        frame_in = laplacian_variance(batch.inputs).tolist()
        frame_out = laplacian_variance(output).tolist()
        out = []
        for n, faces in enumerate(tracked):
            records = []
            for j, face in enumerate(faces):
                k = restored.get((n, j))
                figures = {"lpips_reason": SKIPPED_REASON} if k is None else {
                    "lpips_reason": self.models.lpips_reason,
                    **_region_figures(batch, output, n, face.box),
                    **_identity_figures(identity, k)}
                records.append(_face_record(face, figures))
            out.append((records, {"input": _round(frame_in[n], 1),
                                  "output": _round(frame_out[n], 1)}))
        return out

    def _add_lpips(self, batch: FrameBatch, output: torch.Tensor,
                   tracked: list[list[TrackedFace]], aligned: AlignedFaces,
                   figures: list[tuple[list[dict], dict]]) -> None:
        """LPIPS of each restored face box, output against the upscaled background before
        the paste, into its record; one metric call for the batch."""
        metric = self.models.lpips
        if metric is None or not len(aligned):
            return
        boxes = torch.stack([tracked[n][j].box for n, j in aligned.places])
        rois, valid = _output_rois(boxes, aligned.frame_index, batch.scale, output.shape[-2:])
        size = (LPIPS_SIZE, LPIPS_SIZE)
        after = roi_align(output.float(), rois, size, sampling_ratio=-1, aligned=True)
        before = roi_align(batch.output.float(), rois, size, sampling_ratio=-1, aligned=True)
        values = metric(after, before).tolist()
        for (n, j), value, ok in zip(aligned.places, values, valid.tolist(), strict=True):
            record = figures[n][0][j]
            record["lpips"] = _round(value, 4) if ok else None
            record["lpips_reason"] = (None if record["lpips"] is not None
                                      else "not measured: face box outside the frame")


# --- helpers ---------------------------------------------------------------------------------


def template_face_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, size, size) float32 soft ellipse over the face of an FFHQ-aligned crop: where
    colour statistics are measured when there is no parsing mask (skin, not background)."""
    axis = torch.linspace(-1, 1, size, device=device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    radius = (xx / 0.6).square() + ((yy - 0.05) / 0.75).square()
    return ((1.5 - radius).clamp(0, 0.5) * 2)[None, None]


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


def _landmarked(crops: torch.Tensor) -> list[LandmarkedFace]:
    """(K, 3, S, S) aligned crops -> (uint8 image, template landmarks) pairs on the host."""
    images = (crops * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
    template = face_template(crops.shape[-1]).numpy()
    return [LandmarkedFace(image, template) for image in images.numpy()]


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


def _region_figures(batch: FrameBatch, output: torch.Tensor, n: int,
                    box: torch.Tensor) -> dict[str, Any]:
    """PSNR/SSIM of the pasted face box against the background before the paste, and the
    face's sharpness in the input, the upscaled background and the output. Sharpness
    depends on resolution: compare "output" with "upscaled" (both at the output scale), not
    with "input" when the scale is above 1. Only the box is touched."""
    top, left, bottom, right = _pixel_box(box, 1, *batch.inputs.shape[-2:])
    face_in = batch.inputs[n:n + 1, :, top:bottom, left:right]
    top, left, bottom, right = _pixel_box(box, batch.scale, *output.shape[-2:])
    before = batch.output[n:n + 1, :, top:bottom, left:right]
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


def _face_record(face: TrackedFace, figures: dict[str, Any]) -> dict[str, Any]:
    """One face's log record; figures not measured (skipped faces, scoring off) are null."""
    return {"track": face.track_id, "box": _points(face.box),
            "landmarks_raw": _points(face.landmarks_raw), "landmarks": _points(face.landmarks),
            "score": round(face.score, 4), "skipped": face.skipped,
            "predicted": face.predicted,
            "identity": None, "flagged": None, "guard_fidelity": None,
            "psnr": None, "ssim": None, "lpips": None, "lpips_reason": None,
            "sharpness": None, **figures}


def _points(values: torch.Tensor) -> list:
    return np.round(values.double().numpy(), 2).tolist()


def _round(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


class _Clock:
    """Milliseconds per step of one batch, per frame, named "faces.<step>"; the device is
    synchronised at each step so the step's own work is what it is charged."""

    def __init__(self, device: torch.device, frames: int) -> None:
        self.device, self.frames = device, frames
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, step: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.ms[f"faces.{step}"] = (now - self._last) * 1000 / self.frames
        self._last = now
